/*
 * A TFLite external delegate that fails or stalls on command, for the failover tests.
 *
 * Loaded with load_delegate(path, {"control": FILE}). When the graph is delegated it claims the
 * nodes it can compute exactly in a few lines of C, so that a healthy model gives bit-identical
 * results to the builtin kernels:
 *   - QUANTIZE between uint8 and int8 with one scale and zero points 128 apart (the input and
 *     output adapters of a fully int8 model): the output is the input with its top bit flipped;
 *   - RESHAPE and SQUEEZE: a copy of the bytes.
 * Everything else is left to the runtime (XNNPACK or the builtin kernels).
 *
 * Each kernel invocation reads the control FILE (missing or empty means "ok"):
 *   ok      compute normally;
 *   fail    return an error from the kernel, so Interpreter.invoke() raises;
 *   stall   block (polling the file every millisecond) until it says something else, then
 *           carry on as that says; a stall gives up after STALL_LIMIT_S so that a forgotten
 *           one cannot keep a test process alive for ever;
 *   refuse  like fail, and also refuse to prepare the graph, so loading fails;
 *   abort   call abort() when preparing a graph, so the process loading a model dies of
 *           SIGABRT in native code (a runtime that crashes on a model); kernels of graphs
 *           prepared before keep computing normally.
 * Options: control (the file), claim ("all" the default, or "none": claim nothing, the delegate
 * then never runs).
 *
 * The TFLite delegate interface is plain C structs and function pointers handed over by the
 * runtime, so nothing is linked against it: the declarations below are the part of
 * tensorflow/lite/core/c/common.h's ABI this delegate uses. Its structs only ever grow at the
 * end ("semi-ABI stable"); the one passed by value (TfLiteRegistration) is declared in full, and
 * the delegate struct is over-allocated so that a runtime reading later fields finds zeros.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))
#define STALL_LIMIT_S 30

/* ---- the runtime's ABI (a subset of common.h; layouts must match exactly) ---- */

typedef enum { kOk = 0, kError = 1 } Status;

enum { kTypeUInt8 = 3, kTypeInt8 = 9 };
enum { kBuiltinReshape = 22, kBuiltinSqueeze = 43, kBuiltinQuantize = 114 };
enum { kAllocMmapRo = 1, kAllocDynamic = 4 };

typedef struct IntArray {
  int size;
  int data[];
} IntArray;

typedef struct QuantizationParams {
  float scale;
  int32_t zero_point;
} QuantizationParams;

typedef struct Quantization {
  int type;
  void* params;
} Quantization;

typedef struct Tensor {
  int type;
  void* data;
  IntArray* dims;
  QuantizationParams params;
  int allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
  void* delegate;
  int buffer_handle;
  bool data_is_stale;
  bool is_variable;
  Quantization quantization;
  void* sparsity;
  const IntArray* dims_signature;
} Tensor;

typedef struct Node {
  IntArray* inputs;
  IntArray* outputs;
  IntArray* intermediates;
  IntArray* temporaries;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
  void* delegate;
  bool might_have_side_effect;
} Node;

struct Context;
struct Delegate;

typedef struct Registration {
  void* (*init)(struct Context* context, const char* buffer, size_t length);
  void (*free)(struct Context* context, void* buffer);
  Status (*prepare)(struct Context* context, Node* node);
  Status (*invoke)(struct Context* context, Node* node);
  const char* (*profiling_string)(const struct Context* context, const Node* node);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  void* registration_external;
  void* (*async_kernel)(struct Context* context, Node* node);
  uint64_t inplace_operator;
} Registration;

typedef struct Context {
  size_t tensors_size;
  Status (*GetExecutionPlan)(struct Context* context, IntArray** execution_plan);
  Tensor* tensors;
  void* impl_;
  Status (*ResizeTensor)(struct Context* context, Tensor* tensor, IntArray* new_size);
  void (*ReportError)(struct Context* context, const char* msg, ...);
  Status (*AddTensors)(struct Context* context, int tensors_to_add, int* first_new_tensor_index);
  Status (*GetNodeAndRegistration)(struct Context* context, int node_index, Node** node,
                                   Registration** registration);
  Status (*ReplaceNodeSubsetsWithDelegateKernels)(struct Context* context,
                                                  Registration registration,
                                                  const IntArray* nodes_to_replace,
                                                  struct Delegate* delegate);
  /* later fields are not used */
} Context;

typedef struct DelegateParams {
  struct Delegate* delegate;
  IntArray* nodes_to_replace;
  IntArray* input_tensors;
  IntArray* output_tensors;
} DelegateParams;

typedef struct Delegate {
  void* data_;
  Status (*Prepare)(Context* context, struct Delegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} Delegate;

/* ---- the delegate ---- */

typedef enum { kModeOk, kModeFail, kModeStall, kModeRefuse, kModeAbort } Mode;

typedef struct Settings {
  char control[4096];
  bool claim;
} Settings;

/* One claimed node: which op, and its data input and output tensors. */
typedef struct Step {
  int op;
  int input;
  int output;
} Step;

/* One delegated partition: its claimed nodes (none feeds another, so any order is right). */
typedef struct Kernel {
  const Settings* settings;
  int count;
  Step steps[];
} Kernel;

static Mode read_mode(const Settings* s) {
  if (!s->control[0]) return kModeOk;
  FILE* f = fopen(s->control, "r");
  if (!f) return kModeOk;
  char text[16] = {0};
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ' || text[n - 1] == '\r')) n--;
  text[n] = 0;
  if (!strcmp(text, "fail")) return kModeFail;
  if (!strcmp(text, "stall")) return kModeStall;
  if (!strcmp(text, "refuse")) return kModeRefuse;
  if (!strcmp(text, "abort")) return kModeAbort;
  return kModeOk;
}

/* The mode once any stall is over. */
static Mode wait_out_stall(const Settings* s) {
  const struct timespec tick = {0, 1000000};
  Mode mode = read_mode(s);
  for (long waited = 0; mode == kModeStall && waited < STALL_LIMIT_S * 1000L; waited++) {
    nanosleep(&tick, NULL);
    mode = read_mode(s);
  }
  return mode == kModeStall ? kModeOk : mode;
}

static bool is_uint8_int8_shift(const Tensor* in, const Tensor* out) {
  bool types = (in->type == kTypeUInt8 && out->type == kTypeInt8) ||
               (in->type == kTypeInt8 && out->type == kTypeUInt8);
  int32_t shift = in->type == kTypeUInt8 ? -128 : 128;
  return types && in->params.scale == out->params.scale &&
         out->params.zero_point - in->params.zero_point == shift;
}

/* Whether this delegate computes the node exactly; sets its data input and output. */
static bool can_compute(Context* context, const Node* node, const Registration* reg, int* input,
                        int* output) {
  int op = reg->builtin_code;
  if (op != kBuiltinQuantize && op != kBuiltinReshape && op != kBuiltinSqueeze) return false;
  if (node->inputs->size < 1 || node->outputs->size != 1) return false;
  *input = node->inputs->data[0];
  *output = node->outputs->data[0];
  if (*input < 0 || *output < 0) return false;
  const Tensor* in = &context->tensors[*input];
  const Tensor* out = &context->tensors[*output];
  if (in->allocation_type == kAllocDynamic || out->allocation_type == kAllocDynamic) return false;
  if (in->bytes != out->bytes || in->bytes == 0) return false;
  /* A shape computed at run time would make the output dynamic: only constant shapes. */
  if (op == kBuiltinReshape && node->inputs->size > 1 && node->inputs->data[1] >= 0 &&
      context->tensors[node->inputs->data[1]].allocation_type != kAllocMmapRo)
    return false;
  if (op == kBuiltinQuantize) return is_uint8_int8_shift(in, out);
  return in->type == out->type;
}

static void* kernel_init(Context* context, const char* buffer, size_t length) {
  (void)length;
  const DelegateParams* params = (const DelegateParams*)buffer;
  const IntArray* nodes = params->nodes_to_replace;
  Kernel* k = calloc(1, sizeof *k + sizeof(Step) * (size_t)nodes->size);
  if (!k) return NULL;
  k->settings = (const Settings*)params->delegate->data_;
  for (int i = 0; i < nodes->size; i++) {
    Node* node;
    Registration* reg;
    Step* step = &k->steps[k->count++];
    if (context->GetNodeAndRegistration(context, nodes->data[i], &node, &reg) != kOk ||
        !can_compute(context, node, reg, &step->input, &step->output)) {
      free(k);
      return NULL;
    }
    step->op = reg->builtin_code;
  }
  return k;
}

static void kernel_free(Context* context, void* buffer) {
  (void)context;
  free(buffer);
}

static Status kernel_prepare(Context* context, Node* node) {
  const Kernel* k = node->user_data;
  if (!k) return kError;
  for (int i = 0; i < k->count; i++) {
    const Tensor* in = &context->tensors[k->steps[i].input];
    const Tensor* out = &context->tensors[k->steps[i].output];
    if (in->bytes != out->bytes || out->allocation_type == kAllocDynamic) {
      context->ReportError(context, "failing_delegate: tensor %d has a size set at run time",
                           k->steps[i].output);
      return kError;
    }
  }
  return kOk;
}

static Status kernel_invoke(Context* context, Node* node) {
  const Kernel* k = node->user_data;
  Mode mode = wait_out_stall(k->settings);
  if (mode == kModeFail || mode == kModeRefuse) {
    context->ReportError(context, "failing_delegate: failing on command (%s)",
                         k->settings->control);
    return kError;
  }
  for (int i = 0; i < k->count; i++) {
    const Step* step = &k->steps[i];
    const Tensor* in = &context->tensors[step->input];
    const Tensor* out = &context->tensors[step->output];
    if (in->bytes != out->bytes) return kError;
    if (step->op == kBuiltinQuantize) {
      const uint8_t* src = in->data;
      uint8_t* dst = out->data;
      for (size_t j = 0; j < in->bytes; j++) dst[j] = src[j] ^ 0x80u;
    } else if (out->data != in->data) {
      memmove(out->data, in->data, in->bytes);
    }
  }
  return kOk;
}

static Status delegate_prepare(Context* context, Delegate* delegate) {
  const Settings* s = delegate->data_;
  Mode mode = read_mode(s);
  if (mode == kModeAbort) {
    fprintf(stderr, "failing_delegate: aborting on command (%s)\n", s->control);
    abort();
  }
  if (mode == kModeRefuse) {
    context->ReportError(context, "failing_delegate: refusing the graph on command (%s)",
                         s->control);
    return kError;
  }
  IntArray* plan;
  if (context->GetExecutionPlan(context, &plan) != kOk) return kError;
  IntArray* claimed = calloc(1, sizeof(IntArray) + sizeof(int) * (size_t)(plan->size + 1));
  bool* produced = calloc(context->tensors_size + 1, sizeof(bool));
  if (!claimed || !produced) {
    free(claimed);
    free(produced);
    return kError;
  }
  for (int i = 0; s->claim && i < plan->size; i++) {
    Node* node;
    Registration* reg;
    int input, output;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node, &reg) != kOk) continue;
    /* A node fed by another claimed node would join its partition: keep one node each. */
    if (can_compute(context, node, reg, &input, &output) && !produced[input]) {
      claimed->data[claimed->size++] = plan->data[i];
      produced[output] = true;
    }
  }
  Registration reg = {0};
  reg.init = kernel_init;
  reg.free = kernel_free;
  reg.prepare = kernel_prepare;
  reg.invoke = kernel_invoke;
  reg.custom_name = "failing_delegate";
  reg.version = 1;
  Status status = kOk;
  if (claimed->size > 0)
    status = context->ReplaceNodeSubsetsWithDelegateKernels(context, reg, claimed, delegate);
  free(claimed);
  free(produced);
  return status;
}

EXPORT Delegate* tflite_plugin_create_delegate(char** keys, char** values, int count,
                                               void (*report_error)(const char*)) {
  Settings* s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->claim = true;
  for (int i = 0; i < count; i++) {
    if (!strcmp(keys[i], "control")) {
      snprintf(s->control, sizeof s->control, "%s", values[i]);
    } else if (!strcmp(keys[i], "claim") && !strcmp(values[i], "none")) {
      s->claim = false;
    } else if (strcmp(keys[i], "claim") || strcmp(values[i], "all")) {
      if (report_error) report_error("failing_delegate: unknown option (use control, claim)");
      free(s);
      return NULL;
    }
  }
  /* Zeroed room past the struct: a runtime newer than this declaration reads zeros there. */
  Delegate* d = calloc(1, sizeof *d + 256);
  if (!d) {
    free(s);
    return NULL;
  }
  d->data_ = s;
  d->Prepare = delegate_prepare;
  d->flags = 1;
  return d;
}

EXPORT void tflite_plugin_destroy_delegate(Delegate* delegate) {
  if (!delegate) return;
  free(delegate->data_);
  free(delegate);
}
