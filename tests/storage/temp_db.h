// A scratch directory holding a test database, removed with its contents at the end.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace ringmail::storage::testing {

class TempDb {
 public:
  TempDb() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ringmail_db_XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
  }
  ~TempDb() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  TempDb(const TempDb&) = delete;
  TempDb& operator=(const TempDb&) = delete;

  std::string path() const { return (dir_ / "ringmail.db").string(); }
  std::filesystem::path dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
};

}  // namespace ringmail::storage::testing
