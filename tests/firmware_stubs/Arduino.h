// The smallest Arduino API the edgeq sketch uses, to compile it against TFLM's headers on a host.
#pragma once
struct EdgeqStubSerial {
  void begin(long) {}
  explicit operator bool() const { return true; }
  void print(const char*) {}
  void println(int) {}
};
inline EdgeqStubSerial Serial;
