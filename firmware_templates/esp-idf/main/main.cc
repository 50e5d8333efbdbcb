// Rendered by edgeq export micro for model '{{cname}}'.
#include <cstdio>
#include "edgeq_app.h"

extern "C" void app_main(void) {
  const int status = {{cname}}_model::RunSelfTest();
  std::printf("edgeq self-test status %d\n", status);
}
