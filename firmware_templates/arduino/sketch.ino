// Rendered by edgeq export micro for model '{{cname}}'. Needs an Arduino TensorFlow Lite Micro
// library (e.g. "Chirale_TensorFlowLite" or "Arduino_TensorFlowLite") installed.
#include <Arduino.h>
#include "edgeq_app.h"

void setup() {
  Serial.begin(115200);
  while (!Serial) {
  }
  const int status = {{cname}}_model::RunSelfTest();
  Serial.print("edgeq self-test status ");
  Serial.println(status);
}

void loop() {}
