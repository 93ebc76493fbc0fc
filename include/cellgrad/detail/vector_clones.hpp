// Vectorisation helpers for hot loops in a library built for baseline x86-64: a function marked
// CELLGRAD_POINTWISE_CLONES is compiled for AVX-512, AVX2 and the baseline and picks its clone at
// load time (GCC; not under AddressSanitizer); CELLGRAD_IVDEP tells the compiler that the next
// loop's iterations are independent.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__)
#define CELLGRAD_POINTWISE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CELLGRAD_POINTWISE_CLONES
#endif
#if defined(__clang__)
#define CELLGRAD_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define CELLGRAD_IVDEP _Pragma("GCC ivdep")
#else
#define CELLGRAD_IVDEP
#endif
