// The embedded default model: its config.json, model.safetensors and tokenizer.json are linked
// into the binary with the assembler's .incbin (CMake sets SSM_EMBEDDED_MODEL_DIR when
// models/shakespeare-char exists) and parsed in place, without copying.
#include "ssm/embedded.h"

#include "models/model_impl.h"
#include "ssm/safetensors.h"

#ifdef SSM_EMBEDDED_MODEL_DIR
#define SSM_INCBIN(sym, file)                                                                                     \
  __asm__(".section .rodata\n.global " #sym "\n.balign 64\n" #sym ":\n.incbin \"" SSM_EMBEDDED_MODEL_DIR "/" file \
          "\"\n.global " #sym "_end\n" #sym "_end:\n.byte 0\n.previous\n");                                       \
  extern "C" const uint8_t sym[];                                                                                 \
  extern "C" const uint8_t sym##_end[];
SSM_INCBIN(ssm_embedded_config, "config.json")
SSM_INCBIN(ssm_embedded_weights, "model.safetensors")
SSM_INCBIN(ssm_embedded_tokenizer, "tokenizer.json")
#endif

namespace ssm {

bool has_embedded_model() {
#ifdef SSM_EMBEDDED_MODEL_DIR
  return true;
#else
  return false;
#endif
}

EmbeddedModel load_embedded_model() {
#ifdef SSM_EMBEDDED_MODEL_DIR
  auto text = [](const uint8_t* b, const uint8_t* e) {
    return std::string(reinterpret_cast<const char*>(b), size_t(e - b));
  };
  ModelConfig cfg =
      ModelConfig::from_json_text(text(ssm_embedded_config, ssm_embedded_config_end), "<embedded config.json>");
  auto st = std::make_shared<io::SafeTensors>(
      io::SafeTensors::parse(ssm_embedded_weights, size_t(ssm_embedded_weights_end - ssm_embedded_weights), nullptr,
                             "<embedded model.safetensors>"));
  auto src = safetensors_source(st);
  EmbeddedModel m;
  m.model = build_model(cfg, *src, LoadOptions{});
  m.tokenizer =
      Tokenizer::from_json(text(ssm_embedded_tokenizer, ssm_embedded_tokenizer_end), "<embedded tokenizer.json>");
  m.name = "shakespeare-char";
  return m;
#else
  fail("model", "this build has no embedded model (models/shakespeare-char was missing at build time)");
#endif
}

}  // namespace ssm
