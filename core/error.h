// Errors: every failed check throws lvit::Error carrying the failed expression, file and line.
// Library code never calls exit(); apps catch lvit::Error and print its one-line message.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace lvit {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A user-facing error: bad input file, bad flag, impossible configuration. Its message is meant
// to be printed as is (no file/line decoration).
class UserError : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void throw_check_failure(const char* expr, const char* file, int line,
                                      const std::string& msg);

}  // namespace lvit

// LVIT_CHECK(cond, "fmt {}", args...): throws lvit::Error("check failed: cond (file:line): msg").
#define LVIT_CHECK(cond, ...)                                                             \
  do {                                                                                    \
    if (!(cond)) [[unlikely]]                                                             \
      ::lvit::throw_check_failure(#cond, __FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)

// LVIT_USER_CHECK(cond, "fmt", ...): throws lvit::UserError(msg): for problems with the user's
// input, where the message itself names the file or flag.
#define LVIT_USER_CHECK(cond, ...)                         \
  do {                                                     \
    if (!(cond)) [[unlikely]]                              \
      throw ::lvit::UserError(::fmt::format(__VA_ARGS__)); \
  } while (0)
