// One SMTP mail transaction as the protocol core sees it: an envelope (sender and up to a
// limit of recipients that share identical content) and the encoded content, plus the
// per-recipient outcomes the session produces for it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "smtp/reply.h"

namespace ringmail::smtp {

// Content already passed through encode_data_body(). Shared by every transaction that
// sends the same message, so a campaign stores its body once.
using EncodedBody = std::shared_ptr<const std::string>;

struct Transaction {
  uint64_t id = 0;           // chosen by the caller; returned with the outcome
  std::string sender;        // reverse-path without brackets; "" for the null sender <>
  std::vector<std::string> recipients;  // forward-paths without brackets; at least one
  // The caller's own id of each recipient (a database row, say), parallel to
  // `recipients` or empty. Opaque to the protocol; returned with the outcome.
  std::vector<uint64_t> recipient_tags;
  EncodedBody body;          // never null
  // Opaque to the protocol: the engine's time of queueing it, returned with the outcome
  // (timing without a per-transaction lookup). 0: not stamped.
  uint64_t caller_stamp = 0;
  // Opaque to the protocol: the engine queues it ahead of other work at its destination
  // (a receipt behind a campaign to the same relay).
  bool urgent = false;
};

enum class RecipientStatus : uint8_t {
  kDelivered,  // the server's 2xx to the end of data
  kDeferred,   // 4xx, or the connection was lost / timed out before the final reply
  kBounced,    // 5xx
};

const char* to_string(RecipientStatus status);

// The sender's own reply to work it dropped unsent because it was stopping (a drain, its
// timeout, a ring failure): code 0 with RFC 3463 4.3.2. The engine counts such recipients
// as not attempted and the failure policy queues them again without an attempt; both ask
// this one predicate, so they cannot disagree.
inline constexpr EnhancedCode kStoppedCode{4, 3, 2};
inline bool is_stop_reply(const Reply& reply) { return reply.code == 0 && reply.enhanced == kStoppedCode; }

struct RecipientOutcome {
  RecipientStatus status = RecipientStatus::kDeferred;
  // The reply that decided it: the RCPT reply for a refused recipient, the MAIL or DATA
  // reply when those failed, the reply to the end of data otherwise. For failures made
  // locally (connection lost, timeout, protocol error) code is 0, the enhanced code is
  // 4.4.2 (lost) / 4.4.7 (timeout) / 4.5.0 (protocol error) and text says what happened.
  Reply reply;
  // The reply is about this recipient's own address: the server refused its RCPT (or its
  // domain has a null MX). Only then can a "bad mailbox" code (5.1.1) be trusted to speak
  // of the address; the same code to MAIL or to the end of data says nothing of it.
  bool about_recipient = false;
};

struct TransactionOutcome {
  Transaction transaction;                  // given back to the caller
  std::vector<RecipientOutcome> recipients;  // parallel to transaction.recipients
  // True when not one byte of this transaction reached the server (the connection failed
  // before its MAIL was sent). The caller may retry it on another connection at no risk
  // of a duplicate; `recipients` then holds deferred outcomes with the reason.
  bool not_attempted = false;
  // Set with not_attempted when the sender parked the transaction (its destination had a
  // backlog): not worth offering again before this much time has passed.
  std::chrono::milliseconds retry_after{0};
  // How the connection was protected, filled in by the transport (the protocol core
  // leaves it empty): e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384 verified". Empty: plaintext.
  std::string transport_security;
};

}  // namespace ringmail::smtp
