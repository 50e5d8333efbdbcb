// The smallest Zephyr API the edgeq app uses, to compile it against TFLM's headers on a host.
#pragma once
#include <cstdio>
#define printk std::printf
