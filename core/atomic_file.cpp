#include "core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace lvit {
namespace {

[[noreturn]] void fail(const std::string& path, const char* what, int err) {
  throw UserError(fmt::format("{}: {}: {}", path, what, std::strerror(err)));
}

// fsync the directory holding `path`: on Linux a rename is only durable once the directory's
// own metadata is flushed.
void fsync_parent_dir(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open its directory to sync it", errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some filesystems (e.g. certain FUSE or network mounts) cannot fsync a directory and say so
  // with EINVAL/ENOTSUP; the rename has happened, so there is nothing better to do there.
  if (rc != 0 && err != EINVAL && err != ENOTSUP) fail(path, "cannot sync its directory", err);
}

}  // namespace

void write_all(std::FILE* f, const void* data, size_t nbytes, const std::string& path) {
  if (nbytes == 0) return;
  errno = 0;
  if (std::fwrite(data, 1, nbytes, f) != nbytes) fail(path, "write failed", errno ? errno : EIO);
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(path, fmt::format("cannot create temporary file {}", tmp).c_str(), errno);

  // From here on, every exit that does not end in the rename must close and remove `tmp`.
  auto abandon = [&] {
    if (f) std::fclose(f);
    f = nullptr;
    ::unlink(tmp.c_str());
  };
  try {
    // Replacing a file should not silently change who may read it (fopen creates 0666 & ~umask).
    struct stat old_st {};
    if (::stat(path.c_str(), &old_st) == 0 && S_ISREG(old_st.st_mode))
      ::fchmod(::fileno(f), old_st.st_mode & 07777);

    writer(f);
    errno = 0;
    if (std::ferror(f)) fail(path, "write failed", errno ? errno : EIO);
    if (std::fflush(f) != 0) fail(path, "write failed", errno);
    if (::fsync(::fileno(f)) != 0) fail(path, "cannot sync to disk", errno);
    std::FILE* g = f;
    f = nullptr;  // fclose releases the stream even when it fails: never close it twice
    if (std::fclose(g) != 0) fail(path, "write failed", errno);
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      fail(path, fmt::format("cannot rename {} over it", tmp).c_str(), errno);
  } catch (...) {
    abandon();
    throw;
  }
  fsync_parent_dir(path);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, [&](std::FILE* f) { write_all(f, bytes.data(), bytes.size(), path); });
}

}  // namespace lvit
