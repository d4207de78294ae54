/*
 * Per-pixel passes over the classes of float32 logits [C, H, W], in C, for a block of pixels at a
 * time whose running values stay in L1 and which the compiler vectorizes:
 *  - argmax: PyTorch's CPU argmax over dim 0 runs at a few ns per logit;
 *  - log-sum-exps over a group of classes and over the others: PyTorch takes ~10 passes over the
 *    logits (max, subtract, exp, sum, for each part) and a ~14x slower exp for arguments below
 *    -87; here two passes, with an exp that vectorizes.
 * Each kernel is compiled twice, for x86-64's SSE2 baseline and for AVX2 + FMA, chosen at run
 * time (../csrc/instruction_sets.h), AVX2 being the faster; built without -fwrapv (Python's
 * flags have it; it kept GCC from vectorizing as well). Timings in docs/ACCELERATION.md.
 * The rows are split between PyTorch's OpenMP threads (../csrc/openmp_threads.h).
 * Python side: panoptic_zoo/acceleration/class_maps.py (CClassMapKernels).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>

#include "../csrc/instruction_sets.h"
#include "../csrc/openmp_threads.h"

/* Pixels per block: the running values stay in L1. */
#define BLOCK 512

/* Whether ``logits`` is float32 [C, H, W] with contiguous columns; sets the error if not. */
static int check_logits(const Py_buffer *logits)
{
    if (logits->ndim == 3 && logits->itemsize == 4 && logits->format[0] == 'f' &&
        logits->strides[2] == 4)
        return 1;
    PyErr_SetString(PyExc_ValueError, "logits must be float32 [C, H, W] with contiguous columns");
    return 0;
}

/* Rows [first_row, stop_row) of logits [classes, H, width] (byte strides): the argmax over the
   classes into best_class [H, width]. */
#define ARGMAX_RANGE_PARAMETERS                                                                 \
    const char *logits, Py_ssize_t classes, Py_ssize_t width, Py_ssize_t class_stride,          \
        Py_ssize_t row_stride, int64_t *best_class, Py_ssize_t first_row, Py_ssize_t stop_row
#define ARGMAX_RANGE_ARGUMENTS                                                                  \
    logits, classes, width, class_stride, row_stride, best_class, first_row, stop_row

INLINE void argmax_range(ARGMAX_RANGE_PARAMETERS)
{
    float best[BLOCK];
    int32_t index[BLOCK];
    for (Py_ssize_t y = first_row; y < stop_row; y++) {
        const char *row = logits + y * row_stride;
        for (Py_ssize_t x0 = 0; x0 < width; x0 += BLOCK) {
            const Py_ssize_t n = width - x0 < BLOCK ? width - x0 : BLOCK;
            const float *first = (const float *)row + x0;
            for (Py_ssize_t i = 0; i < n; i++) {
                best[i] = first[i];
                index[i] = 0;
            }
            for (Py_ssize_t c = 1; c < classes; c++) {
                const float *values = (const float *)(row + c * class_stride) + x0;
                for (Py_ssize_t i = 0; i < n; i++) {
                    /* Larger, or a first NaN: NaN compares unequal to itself. */
                    const int take = (values[i] > best[i]) |
                                     ((values[i] != values[i]) & (best[i] == best[i]));
                    best[i] = take ? values[i] : best[i];
                    index[i] = take ? (int32_t)c : index[i];
                }
            }
            int64_t *destination = best_class + y * width + x0;
            for (Py_ssize_t i = 0; i < n; i++) destination[i] = index[i];
        }
    }
}

DEFINE_VARIANTS(argmax_range, ARGMAX_RANGE_PARAMETERS, ARGMAX_RANGE_ARGUMENTS)

PyDoc_STRVAR(argmax_doc,
"argmax(logits, out, threads)\n\n"
"``out[y, x] = argmax_c logits[c, y, x]``: ``logits`` a float32 buffer [C, H, W] whose columns\n"
"are contiguous (any channel and row strides), ``out`` a writable C-contiguous int64 buffer\n"
"[H, W]. The first maximum wins; NaN counts as the largest value (PyTorch's rule). Runs without\n"
"the GIL, on ``threads`` OpenMP threads (PyTorch's pool: pass ``torch.get_num_threads()``).");

static PyObject *argmax(PyObject *self, PyObject *args)
{
    PyObject *logits_object, *out_object;
    int threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOi", &logits_object, &out_object, &threads) ||
        !check_threads(threads))
        return NULL;
    Py_buffer logits, out;
    if (PyObject_GetBuffer(logits_object, &logits, PyBUF_STRIDED_RO | PyBUF_FORMAT) < 0)
        return NULL;
    if (PyObject_GetBuffer(out_object, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&logits);
        return NULL;
    }
    PyObject *result = NULL;
    if (!check_logits(&logits)) {
        /* its error is set */
    } else if (out.ndim != 2 || out.itemsize != 8 || out.shape[0] != logits.shape[1] ||
               out.shape[1] != logits.shape[2]) {
        PyErr_SetString(PyExc_ValueError, "out must be int64 [H, W], H and W those of logits");
    } else if (logits.shape[0] < 1) {
        PyErr_SetString(PyExc_ValueError, "need at least one class");
    } else {
        void (*const kernel)(ARGMAX_RANGE_PARAMETERS) = select_argmax_range();
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
        {
            Py_ssize_t first_row, stop_row;
            thread_share(logits.shape[1], &first_row, &stop_row);
            kernel((const char *)logits.buf, logits.shape[0], logits.shape[2], logits.strides[0],
                   logits.strides[1], (int64_t *)out.buf, first_row, stop_row);
        }
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&logits);
    PyBuffer_Release(&out);
    return result;
}

/*
 * exp(x) for x <= 0 (a difference to a maximum), as Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2,
 * exp(r) by a degree-7 polynomial, 2^n from the exponent bits; ~1 ulp. Below -87.3 the result
 * is that of -87.3, ~1.2e-38 (never changes a sum that holds the maximum's exp(0) = 1).
 * Plain arithmetic, so loops over it vectorize.
 */
INLINE float exp_nonpositive(float x)
{
    x = x > -87.3f ? x : -87.3f;  /* a NaN becomes -87.3 too: callers track NaN themselves */
    /* n = round(x / ln2) by the 1.5 * 2^23 trick (no rounding instruction needed). */
    const float shifter = 12582912.0f;
    const float t = x * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t bits; float value; } scale;
    scale.bits = ((int32_t)n + 127) << 23;
    return p * scale.value;
}

/* One block of pixels: the log-sum-exp over the classes of ``parts`` (each [first, stop)),
   shifted by their maximum. As torch: NaN if any logit is NaN, else an infinite maximum (-inf
   also for no class at all) is the result. */
INLINE void logsumexp_block(const char *row, Py_ssize_t class_stride, Py_ssize_t x0, Py_ssize_t n,
                            const Py_ssize_t parts[][2], int num_parts, float *out)
{
    float maximum[BLOCK], sum[BLOCK];
    int32_t nan_seen[BLOCK];
    for (Py_ssize_t i = 0; i < n; i++) {
        maximum[i] = -INFINITY;
        sum[i] = 0.0f;
        nan_seen[i] = 0;
    }
    for (int part = 0; part < num_parts; part++)
        for (Py_ssize_t c = parts[part][0]; c < parts[part][1]; c++) {
            const float *values = (const float *)(row + c * class_stride) + x0;
            for (Py_ssize_t i = 0; i < n; i++) {
                maximum[i] = values[i] > maximum[i] ? values[i] : maximum[i];
                nan_seen[i] |= values[i] != values[i];
            }
        }
    for (int part = 0; part < num_parts; part++)
        for (Py_ssize_t c = parts[part][0]; c < parts[part][1]; c++) {
            const float *values = (const float *)(row + c * class_stride) + x0;
            for (Py_ssize_t i = 0; i < n; i++) sum[i] += exp_nonpositive(values[i] - maximum[i]);
        }
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = nan_seen[i] ? NAN : isinf(maximum[i]) ? maximum[i] : logf(sum[i]) + maximum[i];
}

/* Rows [first_row, stop_row) of logits [classes, H, width] (byte strides): the log-sum-exps over
   [first_class, stop_class) into group and over the other classes into others. */
#define LOGSUMEXP_RANGE_PARAMETERS                                                              \
    const char *logits, Py_ssize_t classes, Py_ssize_t width, Py_ssize_t class_stride,          \
        Py_ssize_t row_stride, Py_ssize_t first_class, Py_ssize_t stop_class, float *group,     \
        float *others, Py_ssize_t first_row, Py_ssize_t stop_row
#define LOGSUMEXP_RANGE_ARGUMENTS                                                               \
    logits, classes, width, class_stride, row_stride, first_class, stop_class, group, others,   \
        first_row, stop_row

INLINE void logsumexp_range(LOGSUMEXP_RANGE_PARAMETERS)
{
    const Py_ssize_t group_parts[1][2] = {{first_class, stop_class}};
    const Py_ssize_t other_parts[2][2] = {{0, first_class}, {stop_class, classes}};
    for (Py_ssize_t y = first_row; y < stop_row; y++) {
        const char *row = logits + y * row_stride;
        for (Py_ssize_t x0 = 0; x0 < width; x0 += BLOCK) {
            const Py_ssize_t n = width - x0 < BLOCK ? width - x0 : BLOCK;
            logsumexp_block(row, class_stride, x0, n, group_parts, 1, group + y * width + x0);
            logsumexp_block(row, class_stride, x0, n, other_parts, 2, others + y * width + x0);
        }
    }
}

DEFINE_VARIANTS(logsumexp_range, LOGSUMEXP_RANGE_PARAMETERS, LOGSUMEXP_RANGE_ARGUMENTS)

PyDoc_STRVAR(logsumexps_doc,
"logsumexps(logits, first_class, stop_class, group_out, others_out, threads)\n\n"
"For float32 ``logits`` [C, H, W] with contiguous columns: ``group_out[y, x]`` = the\n"
"log-sum-exp over classes ``first_class <= c < stop_class``, ``others_out[y, x]`` over the\n"
"other classes (-inf if none). Outputs: writable C-contiguous float32 [H, W]. A NaN logit gives\n"
"NaN. Runs without the GIL, on ``threads`` OpenMP threads (PyTorch's pool: pass\n"
"``torch.get_num_threads()``).");

static PyObject *logsumexps(PyObject *self, PyObject *args)
{
    PyObject *logits_object, *group_object, *others_object;
    Py_ssize_t first_class, stop_class;
    int threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnnOOi", &logits_object, &first_class, &stop_class,
                          &group_object, &others_object, &threads) ||
        !check_threads(threads))
        return NULL;
    Py_buffer logits, group, others;
    if (PyObject_GetBuffer(logits_object, &logits, PyBUF_STRIDED_RO | PyBUF_FORMAT) < 0)
        return NULL;
    if (PyObject_GetBuffer(group_object, &group, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&logits);
        return NULL;
    }
    if (PyObject_GetBuffer(others_object, &others, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&logits);
        PyBuffer_Release(&group);
        return NULL;
    }
    PyObject *result = NULL;
    const Py_buffer *outputs[2] = {&group, &others};
    int outputs_ok = 1;
    for (int k = 0; k < 2; k++)
        outputs_ok &= outputs[k]->ndim == 2 && outputs[k]->itemsize == 4 &&
                      outputs[k]->format[0] == 'f' && logits.ndim == 3 &&
                      outputs[k]->shape[0] == logits.shape[1] &&
                      outputs[k]->shape[1] == logits.shape[2];
    if (!check_logits(&logits)) {
        /* its error is set */
    } else if (!outputs_ok) {
        PyErr_SetString(PyExc_ValueError, "outputs must be float32 [H, W], those of logits");
    } else if (first_class < 0 || stop_class > logits.shape[0] || first_class >= stop_class) {
        PyErr_SetString(PyExc_ValueError, "need a non-empty class group");
    } else {
        void (*const kernel)(LOGSUMEXP_RANGE_PARAMETERS) = select_logsumexp_range();
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
        {
            Py_ssize_t first_row, stop_row;
            thread_share(logits.shape[1], &first_row, &stop_row);
            kernel((const char *)logits.buf, logits.shape[0], logits.shape[2], logits.strides[0],
                   logits.strides[1], first_class, stop_class, (float *)group.buf,
                   (float *)others.buf, first_row, stop_row);
        }
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&logits);
    PyBuffer_Release(&group);
    PyBuffer_Release(&others);
    return result;
}

static PyMethodDef methods[] = {
    USE_INSTRUCTION_SET_METHOD,
    {"argmax", argmax, METH_VARARGS, argmax_doc},
    {"logsumexps", logsumexps, METH_VARARGS, logsumexps_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_class_maps", "Per-pixel passes over class logits (see maps.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__class_maps(void) { return PyModule_Create(&module); }
