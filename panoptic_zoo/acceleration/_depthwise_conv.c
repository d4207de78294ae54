/*
 * Depthwise convolution (one k x k filter per channel, k odd, stride 1, zero "same" padding of
 * dilation * (k - 1) / 2, any dilation) of float32 NCHW planes, with its bias and an optional
 * ReLU, in C. Each plane is first copied into a zero-padded scratch plane (it stays in the L2
 * cache), so that every output tile of 64 columns reads all its taps without bounds checks and
 * keeps its 64 sums in registers until it is stored once (GCC's generic vectors: 8 x 8 floats,
 * 8 AVX2 registers). The planes are split between PyTorch's OpenMP threads
 * (../csrc/openmp_threads.h).
 * Why: oneDNN runs Panoptic-DeepLab's depthwise layers (dilated 3x3 on 2048 channels, 5x5 on
 * a few hundred) at a small share of its dense-convolution rate; timings in
 * docs/ACCELERATION.md. Python side: panoptic_zoo/acceleration/depthwise_conv.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "../csrc/float32_buffers.h"
#include "../csrc/instruction_sets.h"
#include "../csrc/openmp_threads.h"

typedef float floats8 __attribute__((vector_size(32)));
typedef int ints8 __attribute__((vector_size(32)));
/* The same vector read or written at any float's alignment. */
typedef float unaligned_floats8 __attribute__((vector_size(32), aligned(4)));

/* Columns of one output tile: 8 vectors of 8 floats. */
#define TILE 64

/* The ``vectors`` x 8 outputs of row ``y`` from column ``x`` of one plane, from the padded plane
   (``padded_width`` floats per row; output (y, x) reads padded (y + i d, x + j d) for tap (i, j))
   into ``out_row``. ``vectors`` is a constant in every call, so the sums stay in registers. */
INLINE void convolve_tile(const float *padded, Py_ssize_t padded_width, Py_ssize_t y, Py_ssize_t x,
                          const float *taps, float bias, int size, int dilation, int relu,
                          float *out_row, const int vectors)
{
    floats8 sums[TILE / 8];
    for (int v = 0; v < vectors; v++)
        sums[v] = (floats8){bias, bias, bias, bias, bias, bias, bias, bias};
    for (int i = 0; i < size; i++) {
        const float *row = padded + (y + i * dilation) * padded_width + x;
        for (int j = 0; j < size; j++) {
            const float tap = taps[i * size + j];
            const floats8 weight = {tap, tap, tap, tap, tap, tap, tap, tap};
            const float *source = row + j * dilation;
            for (int v = 0; v < vectors; v++)
                sums[v] += weight * *(const unaligned_floats8 *)(source + 8 * v);
        }
    }
    const floats8 zero = {0};
    for (int v = 0; v < vectors; v++) {
        floats8 value = sums[v];
        if (relu) /* negatives to 0; NaN is not below 0 and stays NaN, as in torch.relu */
            value = (floats8)((ints8)value & ~(value < zero));
        *(unaligned_floats8 *)(out_row + x + 8 * v) = value;
    }
}

/* Row ``y`` (``width`` >= 8 x ``vectors`` columns) in runs of 8 x ``vectors`` columns; a last
   run that would pass the row's end ends there instead, overlapping the one before (its shared
   columns are computed the same way twice), so no column is left to scalar code. */
INLINE void convolve_row(const float *padded, Py_ssize_t padded_width, Py_ssize_t y,
                         Py_ssize_t width, const float *taps, float bias, int size, int dilation,
                         int relu, float *out_row, const int vectors)
{
    const Py_ssize_t run = 8 * vectors;
    Py_ssize_t x = 0;
    for (; x + run <= width; x += run)
        convolve_tile(padded, padded_width, y, x, taps, bias, size, dilation, relu, out_row,
                      vectors);
    if (x < width)
        convolve_tile(padded, padded_width, y, width - run, taps, bias, size, dilation, relu,
                      out_row, vectors);
}

#define CONVOLVE_PLANES_PARAMETERS                                                              \
    const float *input, float *output, Py_ssize_t channels, Py_ssize_t height, Py_ssize_t width, \
        const float *weight, const float *bias, int size, int dilation, int relu, float *padded, \
        Py_ssize_t first_plane, Py_ssize_t stop_plane
#define CONVOLVE_PLANES_ARGUMENTS                                                               \
    input, output, channels, height, width, weight, bias, size, dilation, relu, padded,         \
        first_plane, stop_plane

/* Planes [first_plane, stop_plane) of [N * C, H, W]; ``padded`` is this thread's scratch of
   (H + 2 r) x (W + 2 r) floats, r = dilation * (size / 2). */
INLINE void convolve_planes(CONVOLVE_PLANES_PARAMETERS)
{
    const Py_ssize_t reach = (Py_ssize_t)(size / 2) * dilation;
    const Py_ssize_t padded_width = width + 2 * reach;
    /* The border stays zero; each plane overwrites the inside. */
    memset(padded, 0, (size_t)(padded_width * (height + 2 * reach)) * sizeof(float));
    for (Py_ssize_t plane = first_plane; plane < stop_plane; plane++) {
        const Py_ssize_t channel = plane % channels;
        const float *in = input + plane * height * width;
        float *out = output + plane * height * width;
        for (Py_ssize_t y = 0; y < height; y++)
            memcpy(padded + (y + reach) * padded_width + reach, in + y * width,
                   (size_t)width * sizeof(float));
        const float *taps = weight + channel * size * size;
        const float b = bias ? bias[channel] : 0.0f;
        for (Py_ssize_t y = 0; y < height; y++) {
            float *out_row = out + y * width;
            if (width >= TILE)
                convolve_row(padded, padded_width, y, width, taps, b, size, dilation, relu,
                             out_row, TILE / 8);
            else if (width >= 8)
                convolve_row(padded, padded_width, y, width, taps, b, size, dilation, relu,
                             out_row, 1);
            else
                for (Py_ssize_t x = 0; x < width; x++) {
                    float sum = b;
                    for (int i = 0; i < size; i++)
                        for (int j = 0; j < size; j++)
                            sum += taps[i * size + j] *
                                   padded[(y + i * dilation) * padded_width + x + j * dilation];
                    out_row[x] = relu && sum < 0.0f ? 0.0f : sum;
                }
        }
    }
}

DEFINE_VARIANTS(convolve_planes, CONVOLVE_PLANES_PARAMETERS, CONVOLVE_PLANES_ARGUMENTS)

PyDoc_STRVAR(convolve_doc,
"convolve(input, weight, bias, output, scratch, dilation, relu, threads)\n\n"
"``output`` = the depthwise convolution of ``input`` float32 [N, C, H, W] with ``weight``\n"
"float32 [C, 1, k, k] (k odd), plus ``bias`` float32 [C] (or None), stride 1, zero padding of\n"
"dilation * (k - 1) / 2 on each side; then negatives set to 0 where ``relu`` is true.\n"
"``output`` writable float32 [N, C, H, W]; ``scratch`` writable float32 [threads, (H + 2 r) *\n"
"(W + 2 r)], r = dilation * (k - 1) / 2; all C-contiguous. Runs without the GIL, on\n"
"``threads`` OpenMP threads (PyTorch's pool: pass ``torch.get_num_threads()``).");

static PyObject *convolve(PyObject *self, PyObject *args)
{
    PyObject *input_object, *weight_object, *bias_object, *output_object, *scratch_object;
    int dilation, relu, threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOipi", &input_object, &weight_object, &bias_object,
                          &output_object, &scratch_object, &dilation, &relu, &threads))
        return NULL;
    if (!check_threads(threads))
        return NULL;
    if (dilation < 1) {
        PyErr_SetString(PyExc_ValueError, "dilation must be at least 1");
        return NULL;
    }
    Py_buffer input = {0}, weight = {0}, bias = {0}, output = {0}, scratch = {0};
    const int has_bias = bias_object != Py_None;
    PyObject *result = NULL;
    if (!get_float32_buffer(input_object, &input, 4, "input", 0) ||
        !get_float32_buffer(weight_object, &weight, 4, "weight", 0) ||
        (has_bias && !get_float32_buffer(bias_object, &bias, 1, "bias", 0)) ||
        !get_float32_buffer(output_object, &output, 4, "output", 1) ||
        !get_float32_buffer(scratch_object, &scratch, 2, "scratch", 1))
        goto release;
    const Py_ssize_t batch = input.shape[0], channels = input.shape[1];
    const Py_ssize_t height = input.shape[2], width = input.shape[3];
    const Py_ssize_t size = weight.shape[2];
    if (weight.shape[0] != channels || weight.shape[1] != 1 || weight.shape[3] != size ||
        size % 2 != 1 || (has_bias && bias.shape[0] != channels)) {
        PyErr_SetString(PyExc_ValueError, "weight must be [C, 1, k, k] with k odd and bias [C], "
                                          "for input [N, C, H, W]");
        goto release;
    }
    for (int d = 0; d < 4; d++) {
        if (output.shape[d] != input.shape[d]) {
            PyErr_SetString(PyExc_ValueError, "output must have input's shape [N, C, H, W]");
            goto release;
        }
    }
    const Py_ssize_t reach = (size / 2) * dilation;
    if (scratch.shape[0] < threads || scratch.shape[1] < (height + 2 * reach) * (width + 2 * reach)) {
        PyErr_SetString(PyExc_ValueError, "scratch must be [threads, (H + 2 r) * (W + 2 r)], "
                                          "r = dilation * (k - 1) / 2");
        goto release;
    }
    void (*const convolve_range)(CONVOLVE_PLANES_PARAMETERS) = select_convolve_planes();
    const Py_ssize_t scratch_floats = scratch.shape[1];
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    {
        Py_ssize_t first, stop;
        thread_share(batch * channels, &first, &stop);
        convolve_range((const float *)input.buf, (float *)output.buf, channels, height, width,
                       (const float *)weight.buf, has_bias ? (const float *)bias.buf : NULL,
                       (int)size, dilation, relu,
                       (float *)scratch.buf + omp_get_thread_num() * scratch_floats, first, stop);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
release:
    /* PyBuffer_Release ignores a buffer that was never filled (its obj is NULL). */
    PyBuffer_Release(&input);
    PyBuffer_Release(&weight);
    PyBuffer_Release(&bias);
    PyBuffer_Release(&output);
    PyBuffer_Release(&scratch);
    return result;
}

static PyMethodDef methods[] = {
    USE_INSTRUCTION_SET_METHOD,
    {"convolve", convolve, METH_VARARGS, convolve_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_depthwise_conv",
    "Depthwise convolutions for CPU inference (see depthwise_conv.py).", -1, methods, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC PyInit__depthwise_conv(void) { return PyModule_Create(&module); }
