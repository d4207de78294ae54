/*
 * Instruction-set variants of the project's C kernels. x86-64's baseline is SSE2 (4 floats per
 * vector): each kernel also gets an AVX2 + FMA variant (8 floats), chosen at run time where the
 * CPU has them. Include after Python.h; the module adds USE_INSTRUCTION_SET_METHOD to its
 * method table (tests run every variant through it).
 */
#ifndef PANOPTIC_ZOO_INSTRUCTION_SETS_H
#define PANOPTIC_ZOO_INSTRUCTION_SETS_H

/* Inlined into each instruction-set variant of a kernel, compiled for that set. */
#define INLINE static inline __attribute__((always_inline))

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX2_VARIANT 1

static int cpu_has_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

/* Set by use_instruction_set: 1 = the best this CPU has, 0 = the baseline. Per module. */
static int best_variant = 1;

static int avx2_runs(void)
{
#ifdef HAVE_AVX2_VARIANT
    return best_variant && cpu_has_avx2_fma();
#else
    return 0;
#endif
}

/* For an inlined kernel ``name``: name_baseline, name_avx2 (the same code compiled for AVX2 +
   FMA, where the compiler can target it) and select_name(), which returns the variant to run. */
#ifdef HAVE_AVX2_VARIANT
#define DEFINE_VARIANTS(name, parameters, arguments)                                            \
    static void name##_baseline(parameters) { name(arguments); }                               \
    __attribute__((target("avx2,fma"))) static void name##_avx2(parameters) { name(arguments); } \
    static void (*select_##name(void))(parameters)                                              \
    {                                                                                           \
        return avx2_runs() ? name##_avx2 : name##_baseline;                                     \
    }
#else
#define DEFINE_VARIANTS(name, parameters, arguments)                                            \
    static void name##_baseline(parameters) { name(arguments); }                               \
    static void (*select_##name(void))(parameters) { return name##_baseline; }
#endif

PyDoc_STRVAR(use_instruction_set_doc,
"use_instruction_set(best)\n\n"
"Which compiled variant of this module's kernels runs: the best this CPU has (True, the\n"
"default; AVX2 + FMA where available) or the SSE2 baseline (False). Returns the name of the\n"
"variant now in use, 'avx2' or 'baseline'. For tests, which run both.");

static PyObject *use_instruction_set(PyObject *self, PyObject *args)
{
    int best;
    (void)self;
    if (!PyArg_ParseTuple(args, "p", &best))
        return NULL;
    best_variant = best;
    return PyUnicode_FromString(avx2_runs() ? "avx2" : "baseline");
}

#define USE_INSTRUCTION_SET_METHOD                                                              \
    {"use_instruction_set", use_instruction_set, METH_VARARGS, use_instruction_set_doc}

#endif
