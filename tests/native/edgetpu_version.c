/*
 * A stand-in for the version entry point of the Edge TPU runtime library (libedgetpu), for the
 * lock-step tests: it exports
 *     const char* edgetpu_version();
 * as declared in google-coral/libedgetpu tflite/public/edgetpu_c.h ("Returns the version of edge
 * TPU runtime stack"), returning EDGETPU_VERSION, which the real library formats as
 * "BuildLabel(%s), RuntimeVersion(%d)" (tflite/edgetpu_manager_direct.cc). When TENSORFLOW_COMMIT
 * is defined it also carries the "TENSORFLOW_COMMIT=<sha>" build label that libedgetpu's Makefile
 * embeds with bazel's --embed_label (port/default/builddata.cc keeps it in the binary). It has no
 * delegate symbols: loading it as a delegate fails, as a foreign library does.
 */
#ifndef EDGETPU_VERSION
#define EDGETPU_VERSION "BuildLabel(N/A), RuntimeVersion(14)"
#endif

__attribute__((visibility("default"))) const char *edgetpu_version(void) {
  return EDGETPU_VERSION;
}

#ifdef TENSORFLOW_COMMIT
__attribute__((visibility("default"), used)) const char kBuildEmbedLabel[] =
    "TENSORFLOW_COMMIT=" TENSORFLOW_COMMIT;
#endif
