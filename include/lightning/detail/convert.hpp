// Element conversions between storage types and the fp32 the kernels compute in.
#pragma once

namespace lightning::detail {

inline float to_float(float x) { return x; }
template <class T>
T from_float(float x);
template <>
inline float from_float<float>(float x) {
  return x;
}

}  // namespace lightning::detail
