// safetensors I/O (https://huggingface.co/docs/safetensors): the checkpoint format, chosen so
// that PyTorch's `safetensors` can read our weights and we can read its.
//
// Layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
//   {"__metadata__": {"key": "value", ...},
//    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
// then the byte buffer; [begin, end) are relative to the buffer start, little-endian, row-major.
// Supported dtypes are lvit's: F32, F64, BF16, I32, I64, U8.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace lvit {

struct SafetensorsFile {
  std::string path;                       // where it was loaded from (names the file in errors)
  std::vector<std::string> names;         // the order of the JSON header (for files we write, the
                                          // order the tensors were passed to save_safetensors)
  std::map<std::string, Tensor> tensors;  // CPU, contiguous, each with its own storage
  std::map<std::string, std::string> metadata;

  bool contains(const std::string& name) const { return tensors.count(name) != 0; }
  // Throws lvit::UserError("<path>: no tensor '<name>'") when absent.
  const Tensor& at(const std::string& name) const;
};

// Reads the whole file into CPU tensors. Any malformed input (missing file, truncated file,
// bad header length, invalid JSON, missing or ill-typed fields, unknown dtype, negative dims,
// offsets that disagree with dtype x shape, fall outside the buffer, overlap or leave holes,
// non-string metadata, duplicate keys) throws lvit::UserError with a one-line message that
// starts with the path.
SafetensorsFile load_safetensors(const std::string& path);

// Writes `tensors` (any device, any strides) in the given order, plus `metadata`, atomically
// (see core/atomic_file.h). The header is padded with spaces to a multiple of 8 bytes and the
// data are laid out by decreasing element size, so every tensor starts at an offset aligned to
// its element size, as the reference writer does (a reader that maps the file can then use the
// bytes in place). Duplicate or reserved ("__metadata__") names throw lvit::UserError.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace lvit
