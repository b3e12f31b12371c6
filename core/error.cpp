#include "core/error.h"

namespace lvit {

void throw_check_failure(const char* expr, const char* file, int line, const std::string& msg) {
  throw Error(
      fmt::format("check failed: {} ({}:{}){}{}", expr, file, line, msg.empty() ? "" : ": ", msg));
}

}  // namespace lvit
