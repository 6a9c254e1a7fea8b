{
  "targets": [
    {
      "target_name": "transmla",
      "sources": [
        "native/addon.cc",
        "native/addon-misc.cc",
        "native/quant.cc",
        "native/gemm.cc",
        "native/gemv.cc",
        "native/convert.cc",
        "native/gram.cc",
        "native/eigh.cc",
        "native/attention.cc",
        "native/addon-f64.cc",
        "native/dgemm.cc",
        "native/dgemm-seq.cc",
        "native/fidelity.cc"
      ],
      # Explicit ISA flags, never -march=native: the binary must run on any AVX2/FMA/F16C machine.
      # Exceptions are enabled so allocation failures and solver errors become JS errors, not aborts.
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags": ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-fexceptions"],
      "cflags_cc": ["-std=c++17"],
      "ldflags": ["-fopenmp"]
    }
  ]
}
