// Helpers shared by the data suites: where the shared data lives, and scratch folders.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

namespace lvit::test {

// $LVIT_SHARED_DATA, else ../shared/data beside the repository.
inline std::string shared_data_dir() {
  if (const char* env = std::getenv("LVIT_SHARED_DATA"); env && *env) return env;
  return std::string(LVIT_SOURCE_DIR) + "/../shared/data";
}

// A fresh folder under the system temp dir, removed when the test ends.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix) {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / (prefix + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str(const std::string& name = "") const { return (path / name).string(); }
};

}  // namespace lvit::test
