#include "engine/engine.h"

#include <pthread.h>
#include <signal.h>

#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/shard.h"
#include "engine/shard_inbox.h"
#include "engine/transaction_batcher.h"

namespace ringmail::engine {
namespace {

// The feeder hands a shard its work in batches: one lock and at most one eventfd write
// per batch, or sooner when the source is slow so no work waits long.
constexpr size_t kFeedBatch = 64;
constexpr auto kFeedMaxDelay = std::chrono::milliseconds(5);
// How long the feeder reuses the route of a run of recipients in one domain: a route can
// change while ringmail runs (a relay name looked up again, app/relay_refresher.h).
constexpr auto kRouteReuse = std::chrono::seconds(1);

std::string_view domain_of(std::string_view address) {
  size_t at = address.rfind('@');
  return at == std::string_view::npos ? std::string_view{} : address.substr(at + 1);
}

}  // namespace

struct Engine::Impl {
  EngineOptions options;
  RouteResolver& resolver;
  OutcomeSink* sink;

  std::vector<std::unique_ptr<ShardInbox>> inboxes;
  std::vector<std::unique_ptr<DeliveryCounters>> counters;
  std::vector<std::thread> threads;
  std::thread feeder;

  std::atomic<bool> drain{false};
  std::mutex source_mutex;
  JobSource* source = nullptr;  // set by start() before the feeder runs; guarded by source_mutex
  mutable std::mutex failure_mutex;
  std::optional<std::string> failure;
  std::atomic<uint64_t> taken{0};
  std::mutex done_mutex;
  std::mutex join_mutex;
  std::condition_variable done_cv;
  unsigned threads_running = 0;
  bool started = false;

  Impl(EngineOptions o, RouteResolver& r, OutcomeSink* s)
      : options(std::move(o)), resolver(r), sink(s) {
    if (options.shards == 0) options.shards = std::max(1u, std::thread::hardware_concurrency());
    // Built here, never resized: request_drain() and snapshot() may run on other threads
    // at any time, including while start() runs.
    for (unsigned i = 0; i < options.shards; ++i) {
      inboxes.push_back(std::make_unique<ShardInbox>());
      counters.push_back(std::make_unique<DeliveryCounters>());
    }
  }

  void join_all() {
    std::lock_guard lock(join_mutex);  // wait_for and the destructor may both get here
    if (feeder.joinable()) feeder.join();
    for (auto& t : threads)
      if (t.joinable()) t.join();
  }

  void thread_exited() {
    std::lock_guard lock(done_mutex);
    --threads_running;
    done_cv.notify_all();
  }

  void feed(JobSource& source);

  void drain_all() {
    drain.store(true);
    for (auto& inbox : inboxes) inbox->request_drain();
    // Under the mutex: the feeder clears the pointer under it before the source may go.
    std::lock_guard lock(source_mutex);
    if (source) source->interrupt();  // a feeder waiting for work stops
  }

  void shard_failed(unsigned shard, const std::string& what) {
    {
      std::lock_guard lock(failure_mutex);
      if (!failure) failure = "shard " + std::to_string(shard) + ": " + what;
    }
    drain_all();
  }
};

void Engine::Impl::feed(JobSource& source) {
  const unsigned shard_count = options.shards;
  std::vector<std::vector<ShardJob>> pending(shard_count);
  auto last_push = std::chrono::steady_clock::now();

  auto push = [&](unsigned shard) {
    if (pending[shard].empty()) return;
    ShardInbox& inbox = *inboxes[shard];
    // Bounded memory: wait while the shard holds its capacity of unfinished work. This is
    // the feeder's own thread, so waiting here blocks nobody on the hot path.
    while (!drain.load(std::memory_order_relaxed) &&
           inbox.outstanding.load(std::memory_order_relaxed) >= options.shard_inbox_capacity)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    inbox.push(std::move(pending[shard]));
    pending[shard] = {};
    pending[shard].reserve(kFeedBatch);
  };
  auto push_all = [&] {
    for (unsigned i = 0; i < shard_count; ++i) push(i);
    last_push = std::chrono::steady_clock::now();
  };

  TransactionBatcher batcher(options.pool.max_recipients_per_transaction, [&](ShardJob&& job) {
    unsigned shard = unsigned(std::hash<std::string>{}(job.destination_key) % shard_count);
    pending[shard].push_back(std::move(job));
    if (pending[shard].size() >= kFeedBatch) push(shard);
  });

  Destination last_destination;
  std::string last_destination_key;
  std::string last_domain;
  bool have_last = false;
  auto last_routed = std::chrono::steady_clock::time_point{};
  while (!drain.load(std::memory_order_relaxed)) {
    std::optional<DeliveryItem> item = source.next();
    if (!item) {
      // Nothing now: what the batcher holds goes to the shards before any wait, so a
      // receipt never waits for the next one.
      batcher.flush();
      push_all();
      if (drain.load(std::memory_order_relaxed) || !source.wait_for_more()) break;
      have_last = false;  // the route may have changed while the source was idle
      continue;
    }
    taken.fetch_add(1, std::memory_order_relaxed);
    std::string_view domain = domain_of(item->recipient);
    const auto now = std::chrono::steady_clock::now();
    // Consecutive recipients often share a domain; skip the resolver call for them, for a
    // second at most (kRouteReuse).
    if (!have_last || domain != last_domain || now - last_routed > kRouteReuse) {
      last_routed = now;
      last_domain.assign(domain);
      last_destination = resolver.route(domain);
      last_destination_key = last_destination.key();
      have_last = true;
    }
    batcher.add(std::move(*item), last_destination, last_destination_key);
    if (now - last_push > kFeedMaxDelay) push_all();
  }
  // Flushed even when draining: every recipient taken must reach a shard, which gives
  // the ones it will not attempt their "not attempted" outcome.
  batcher.flush();
  push_all();
  for (auto& inbox : inboxes) inbox->close();
}

Engine::Engine(EngineOptions options, RouteResolver& resolver, OutcomeSink* sink)
    : impl_(std::make_unique<Impl>(std::move(options), resolver, sink)) {}

Engine::~Engine() {
  if (!impl_->started) return;
  request_drain();
  impl_->join_all();
}

void Engine::start(JobSource& source) {
  Impl& m = *impl_;
  const unsigned n = m.options.shards;
  // Each ring is created on the thread that uses it: IORING_SETUP_SINGLE_ISSUER ties a
  // ring to its creating thread. start() waits for every shard to be built, so a kernel
  // without io_uring is a start-up error here, not a silently dead thread.
  std::vector<std::promise<void>> built(n);
  m.started = true;
  m.threads_running = n;
  for (unsigned i = 0; i < n; ++i) {
    m.threads.emplace_back([&m, &built, i] {
      std::string name = "ringmail-s" + std::to_string(i);
      pthread_setname_np(pthread_self(), name.c_str());
      std::unique_ptr<Shard> shard;
      try {
        shard = std::make_unique<Shard>(i, m.options, *m.inboxes[i], m.sink, *m.counters[i],
                                        [&m, i](const std::string& what) { m.shard_failed(i, what); });
        built[i].set_value();
      } catch (...) {
        built[i].set_exception(std::current_exception());
        m.thread_exited();
        return;
      }
      shard->run();
      shard.reset();
      m.thread_exited();
    });
  }
  std::exception_ptr failure;
  for (auto& b : built) {
    try {
      b.get_future().get();
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (failure) {
    for (auto& inbox : m.inboxes) inbox->close();
    for (auto& t : m.threads) t.join();
    m.threads.clear();
    m.started = false;
    std::rethrow_exception(failure);
  }
  {
    std::lock_guard lock(m.done_mutex);
    ++m.threads_running;  // the feeder
  }
  {
    std::lock_guard lock(m.source_mutex);
    m.source = &source;
  }
  m.feeder = std::thread([&m, &source] {
    pthread_setname_np(pthread_self(), "ringmail-feed");
    m.feed(source);
    {
      std::lock_guard lock(m.source_mutex);
      m.source = nullptr;  // no wait to interrupt any more; the source may go
    }
    m.thread_exited();
  });
}

void Engine::request_drain() { impl_->drain_all(); }

std::optional<std::string> Engine::failure() const {
  std::lock_guard lock(impl_->failure_mutex);
  return impl_->failure;
}

bool Engine::wait_for(std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  std::unique_lock lock(m.done_mutex);
  bool done = m.done_cv.wait_for(lock, timeout, [&] { return m.threads_running == 0; });
  if (!done) return false;
  lock.unlock();
  m.join_all();
  return true;
}

DeliverySnapshot Engine::snapshot() const {
  DeliverySnapshot total;
  for (auto& c : impl_->counters) total.add(c->snapshot());
  return total;
}

uint64_t Engine::recipients_taken() const { return impl_->taken.load(std::memory_order_relaxed); }

unsigned Engine::shard_count() const { return impl_->options.shards; }

}  // namespace ringmail::engine
