// Crash-safe file replacement: checkpoints, configs and results are written to a temporary file
// in the same directory, flushed to disk, and renamed over the target. rename(2) within one
// filesystem is atomic, so after a crash at any point the target holds either its old contents
// or the complete new ones, never a torn mix.
#pragma once
#include <cstddef>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace lvit {

// Replaces `path` with whatever `writer` writes to the stream it is given.
//   1. writes to `path + ".tmp.<pid>"` (same directory, so the rename cannot cross filesystems;
//      the pid keeps two processes saving to one path from sharing a temp file),
//   2. fflush + fsync, so the bytes are on disk before the name points at them,
//   3. rename over `path` (an existing file keeps its permission bits),
//   4. fsync the directory, so the rename itself survives a power cut.
// If the writer throws, or any step fails, the temp file is removed and `path` is untouched.
// Failures of the steps above throw lvit::UserError("<path>: <what>: <strerror(errno)>"); an
// exception from the writer is rethrown as is. Use write_all() inside the writer so that a
// failed write reports its errno at once rather than at the final flush.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer);

// Convenience: atomically replaces `path` with exactly `bytes` (text or binary).
void write_file_atomic(const std::string& path, std::string_view bytes);

// fwrite that throws lvit::UserError("<path>: write failed: <strerror>") on a short write.
// `path` only names the file in the message.
void write_all(std::FILE* f, const void* data, size_t nbytes, const std::string& path);

}  // namespace lvit
