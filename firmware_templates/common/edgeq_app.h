// Rendered by edgeq export micro for model '{{cname}}'. Shared by every target's main.
#ifndef EDGEQ_{{CNAME}}_APP_H_
#define EDGEQ_{{CNAME}}_APP_H_

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/schema/schema_generated.h"

#include "{{cname}}_arena.h"
#include "{{cname}}_model_data.h"
#include "{{cname}}_op_resolver.h"

#define EDGEQ_WITH_TFLM 1
#if __has_include("{{cname}}_golden.h")
#include "{{cname}}_golden.h"
#define EDGEQ_HAS_GOLDEN 1
#endif

namespace {{cname}}_model {

// The interpreter over the model, the exact op resolver and the measured arena.
inline tflite::MicroInterpreter* Interpreter() {
  static tflite::MicroInterpreter* interpreter = nullptr;
  if (interpreter != nullptr) return interpreter;
  const tflite::Model* model = tflite::GetModel(g_{{cname}}_model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("edgeq: model schema %d, library %d", static_cast<int>(model->version()),
                TFLITE_SCHEMA_VERSION);
    return nullptr;
  }
  const OpResolver* resolver = GetOpResolver();
  if (resolver == nullptr) {
    MicroPrintf("edgeq: registering the model's ops failed");
    return nullptr;
  }
  static tflite::MicroInterpreter instance(model, *resolver, g_tensor_arena, kTensorArenaSize);
  if (instance.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("edgeq: AllocateTensors failed in a %d-byte arena", static_cast<int>(kTensorArenaSize));
    return nullptr;
  }
  interpreter = &instance;
  return interpreter;
}

// 0 when the model loads and allocates (and, with golden data, matches the host's outputs
// within kGoldenToleranceLsb).
inline int RunSelfTest() {
  tflite::MicroInterpreter* interpreter = Interpreter();
  if (interpreter == nullptr) return 1;
  MicroPrintf("edgeq model {{cname}} sha256 %s: arena used %d of %d bytes", kSha256,
              static_cast<int>(interpreter->arena_used_bytes()), static_cast<int>(kTensorArenaSize));
#ifdef EDGEQ_HAS_GOLDEN
  long max_diff = 0;
  const bool pass = RunGolden(*interpreter, &max_diff);
  MicroPrintf("edgeq golden: %s, max |diff| %d LSB over %d samples", pass ? "PASS" : "FAIL",
              static_cast<int>(max_diff), kGoldenCount);
  return pass ? 0 : 2;
#else
  return 0;
#endif
}

}  // namespace {{cname}}_model

#endif  // EDGEQ_{{CNAME}}_APP_H_
