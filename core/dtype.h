// Element types and devices.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lvit {

// f64 exists for gradchecks; bf16 is reserved for the GPU's mixed precision.
enum class DType : uint8_t { f32, f64, bf16, i32, i64, u8 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);
bool is_floating(DType t);
// safetensors spelling: F32, F64, BF16, I32, I64, U8.
std::string_view dtype_safetensors_name(DType t);
bool dtype_from_safetensors_name(std::string_view s, DType* out);

template <typename T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::f64;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::i64;
};
template <>
struct dtype_of<uint8_t> {
  static constexpr DType value = DType::u8;
};

struct Device {
  enum class Kind : uint8_t { cpu, cuda };
  Kind kind = Kind::cpu;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {Kind::cuda, i}; }
  bool is_cpu() const { return kind == Kind::cpu; }
  bool is_cuda() const { return kind == Kind::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const;
};

// Parses "cpu", "cuda", "cuda:1"; throws UserError otherwise.
Device parse_device(std::string_view s);

}  // namespace lvit
