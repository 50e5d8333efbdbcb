// Rendered by edgeq export micro for model '{{cname}}'.
#include <zephyr/kernel.h>
#include "edgeq_app.h"

int main(void) {
  const int status = {{cname}}_model::RunSelfTest();
  printk("edgeq self-test status %d\n", status);
  return status;
}
