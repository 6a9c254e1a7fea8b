/* A tiny driver over the llama.cpp libraries node-llama-cpp ships (libggml-base, libllama), so
 * tests can compare our Q8_0/Q4_0 code with llama.cpp's own: node-llama-cpp has no llama-quantize
 * binary and no quantization API, but its shared libraries export the functions.
 *
 *   ggml-quant rows  <libggml-base.so> q8_0|q4_0 <in.f32> <out.blocks>   quantize_row_*_ref
 *   ggml-quant deq   <libggml-base.so> q8_0|q4_0 <in.blocks> <out.f32>   dequantize_row_*
 *   ggml-quant model <libllama.so> q8_0|q4_0 <in.gguf> <out.gguf>        llama_model_quantize
 *
 * Everything is looked up with dlsym; declarations are ours, written from llama.h / ggml-quants.h
 * of the llama.cpp node-llama-cpp 3.22.1 bundles (de3ff815ea7d559ee917f063901b8986f038abc6). */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*row_fn)(const float *x, void *y, int64_t k);
typedef void (*deq_fn)(const void *x, float *y, int64_t k);

/* The leading fields of struct llama_model_quantize_params (llama.h): the defaults come from
 * llama_model_quantize_default_params(), which returns the struct in memory (it is larger than
 * 16 bytes), so a larger union receives it safely whatever fields follow. */
struct params_head {
  int32_t nthread;
  int32_t ftype; /* enum llama_ftype: LLAMA_FTYPE_MOSTLY_Q4_0 = 2, LLAMA_FTYPE_MOSTLY_Q8_0 = 7 */
  int32_t output_tensor_type;
  int32_t token_embedding_type;
  bool allow_requantize;
  bool quantize_output_tensor;
  bool only_copy;
  bool pure; /* every quantizable tensor gets the default type */
};
union params {
  struct params_head h;
  unsigned char bytes[1024];
};
typedef union params (*default_params_fn)(void);
typedef uint32_t (*model_quantize_fn)(const char *in, const char *out, const union params *p);

static void *sym(void *lib, const char *name) {
  void *f = dlsym(lib, name);
  if (!f) {
    fprintf(stderr, "ggml-quant: %s not found: %s\n", name, dlerror());
    exit(2);
  }
  return f;
}

static unsigned char *slurp(const char *path, long *n) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); exit(2); }
  fseek(f, 0, SEEK_END);
  *n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(*n > 0 ? (size_t)*n : 1);
  if (fread(b, 1, (size_t)*n, f) != (size_t)*n) { perror(path); exit(2); }
  fclose(f);
  return b;
}

static void spill(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) { perror(path); exit(2); }
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: ggml-quant rows|deq|model <library> q8_0|q4_0 <in> <out>\n");
    return 2;
  }
  const char *mode = argv[1], *type = argv[3];
  const int q8 = strcmp(type, "q8_0") == 0;
  if (!q8 && strcmp(type, "q4_0") != 0) { fprintf(stderr, "ggml-quant: unknown type %s\n", type); return 2; }
  const long block = q8 ? 34 : 18;
  void *lib = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
  if (!lib) { fprintf(stderr, "ggml-quant: %s\n", dlerror()); return 2; }
  if (strcmp(mode, "rows") == 0) {
    long n;
    float *x = (float *)slurp(argv[4], &n);
    const long k = n / 4;
    void *y = malloc((size_t)(k / 32 * block) + 1);
    ((row_fn)sym(lib, q8 ? "quantize_row_q8_0_ref" : "quantize_row_q4_0_ref"))(x, y, k);
    spill(argv[5], y, (size_t)(k / 32 * block));
    return 0;
  }
  if (strcmp(mode, "deq") == 0) {
    long n;
    unsigned char *b = slurp(argv[4], &n);
    const long k = n / block * 32;
    float *y = malloc((size_t)k * 4 + 4);
    ((deq_fn)sym(lib, q8 ? "dequantize_row_q8_0" : "dequantize_row_q4_0"))(b, y, k);
    spill(argv[5], y, (size_t)k * 4);
    return 0;
  }
  if (strcmp(mode, "model") == 0) {
    union params p = ((default_params_fn)sym(lib, "llama_model_quantize_default_params"))();
    p.h.nthread = 1;
    p.h.ftype = q8 ? 7 : 2;
    p.h.pure = true;
    const uint32_t rc = ((model_quantize_fn)sym(lib, "llama_model_quantize"))(argv[4], argv[5], &p);
    if (rc != 0) { fprintf(stderr, "ggml-quant: llama_model_quantize failed (%u)\n", rc); return 1; }
    return 0;
  }
  fprintf(stderr, "ggml-quant: unknown mode %s\n", mode);
  return 2;
}
