/*
 * The bilinear sampling of a 3x3 deformable convolution (stride 1, padding 1, one offset group),
 * in C: the columns [pixels, 9 taps, C] that one matrix product with the weights turns into the
 * output, for a range of pixels of one float32 image stored channels-last ([H, W, C]). Each
 * sample is a weighted sum of four rows of C contiguous floats, which the compiler vectorizes;
 * neighbouring pixels read neighbouring rows, so they come from cache. The pixels are split
 * between PyTorch's OpenMP threads (../csrc/openmp_threads.h), which run the matrix products
 * around the sampling.
 * torchvision's CPU kernel samples in one thread, from NCHW planes (a stride of H * W floats
 * between a sample's channels); timings in docs/ACCELERATION.md.
 * Python side: panoptic_zoo/acceleration/deform_conv.py (sampled_deform_conv3x3).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <string.h>

#include "../csrc/float32_buffers.h"
#include "../csrc/instruction_sets.h"
#include "../csrc/openmp_threads.h"

#define TAPS 9

/* Pixels [first_pixel, first_pixel + pixels) of an image [height, width, channels]: column
   row (i, tap) = the input bilinearly sampled at (y + tap / 3 - 1 + offset[2 tap][y, x],
   x + tap % 3 - 1 + offset[2 tap + 1][y, x]) for pixel first_pixel + i = (y, x), times
   mask[tap][y, x] when there is a mask. torchvision's rules: a position at or beyond one pixel
   outside the image samples zero, as do the corners outside it. */
#define SAMPLE_RANGE_PARAMETERS                                                                 \
    const float *input, Py_ssize_t height, Py_ssize_t width, Py_ssize_t channels,               \
        const float *offset, const float *mask, float *columns, Py_ssize_t first_pixel,         \
        Py_ssize_t pixels
#define SAMPLE_RANGE_ARGUMENTS                                                                  \
    input, height, width, channels, offset, mask, columns, first_pixel, pixels

INLINE void sample_range(SAMPLE_RANGE_PARAMETERS)
{
    const Py_ssize_t plane = height * width;
    for (Py_ssize_t i = 0; i < pixels; i++) {
        const Py_ssize_t pixel = first_pixel + i;
        const Py_ssize_t row = pixel / width, column = pixel % width;
        for (int tap = 0; tap < TAPS; tap++) {
            float *restrict out = columns + (i * TAPS + tap) * channels;
            const float y = (float)(row + tap / 3 - 1) + offset[2 * tap * plane + pixel];
            const float x = (float)(column + tap % 3 - 1) + offset[(2 * tap + 1) * plane + pixel];
            /* Also false for NaN positions, which sample zero. */
            if (!(y > -1.0f && y < (float)height && x > -1.0f && x < (float)width)) {
                memset(out, 0, (size_t)channels * sizeof(float));
                continue;
            }
            const float y_floor = floorf(y), x_floor = floorf(x);
            const Py_ssize_t y0 = (Py_ssize_t)y_floor, x0 = (Py_ssize_t)x_floor;
            const float low_y = y - y_floor, low_x = x - x_floor;
            const float scale = mask ? mask[tap * plane + pixel] : 1.0f;
            const float high_y = (1.0f - low_y) * scale, high_x = 1.0f - low_x;
            const float weight[4] = {high_y * high_x, high_y * low_x, low_y * scale * high_x,
                                     low_y * scale * low_x};
            const float *restrict top_left = input + (y0 * width + x0) * channels;
            if (y0 >= 0 && y0 + 1 < height && x0 >= 0 && x0 + 1 < width) {
                const float *restrict top_right = top_left + channels;
                const float *restrict bottom_left = top_left + width * channels;
                const float *restrict bottom_right = bottom_left + channels;
                for (Py_ssize_t c = 0; c < channels; c++)
                    out[c] = weight[0] * top_left[c] + weight[1] * top_right[c] +
                             weight[2] * bottom_left[c] + weight[3] * bottom_right[c];
                continue;
            }
            /* On the border: only the corners inside the image count. */
            memset(out, 0, (size_t)channels * sizeof(float));
            for (int corner = 0; corner < 4; corner++) {
                const Py_ssize_t corner_y = y0 + corner / 2, corner_x = x0 + corner % 2;
                if (corner_y < 0 || corner_y >= height || corner_x < 0 || corner_x >= width)
                    continue;
                const float *restrict values = input + (corner_y * width + corner_x) * channels;
                for (Py_ssize_t c = 0; c < channels; c++)
                    out[c] += weight[corner] * values[c];
            }
        }
    }
}

DEFINE_VARIANTS(sample_range, SAMPLE_RANGE_PARAMETERS, SAMPLE_RANGE_ARGUMENTS)

PyDoc_STRVAR(sample_columns_doc,
"sample_columns(input, offset, mask, columns, first_pixel, threads)\n\n"
"The sampled inputs of a 3x3 deformable convolution (stride 1, padding 1, dilation 1, one\n"
"offset group) for pixels ``first_pixel ... first_pixel + len(columns) - 1`` of one image:\n"
"``columns[i, tap * C + c]`` is channel c of ``input`` bilinearly sampled at tap ``tap``'s\n"
"offset position from that pixel, times ``mask[tap]`` there. ``input`` float32 [H, W, C],\n"
"``offset`` float32 [18, H, W] (dy, dx per tap, torchvision's order), ``mask`` float32\n"
"[9, H, W] or None, ``columns`` writable float32 [n, 9 * C]; all C-contiguous. Positions and\n"
"corners outside the image read zero, as in torchvision. Runs without the GIL, on ``threads``\n"
"OpenMP threads (PyTorch's pool: pass ``torch.get_num_threads()``).");

static PyObject *sample_columns(PyObject *self, PyObject *args)
{
    PyObject *input_object, *offset_object, *mask_object, *columns_object;
    Py_ssize_t first_pixel;
    int threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOni", &input_object, &offset_object, &mask_object,
                          &columns_object, &first_pixel, &threads))
        return NULL;
    if (!check_threads(threads))
        return NULL;
    Py_buffer input = {0}, offset = {0}, mask = {0}, columns = {0};
    const int has_mask = mask_object != Py_None;
    PyObject *result = NULL;
    if (!get_float32_buffer(input_object, &input, 3, "input", 0) ||
        !get_float32_buffer(offset_object, &offset, 3, "offset", 0) ||
        (has_mask && !get_float32_buffer(mask_object, &mask, 3, "mask", 0)) ||
        !get_float32_buffer(columns_object, &columns, 2, "columns", 1))
        goto release;
    const Py_ssize_t height = input.shape[0], width = input.shape[1], channels = input.shape[2];
    if (offset.shape[0] != 2 * TAPS || offset.shape[1] != height || offset.shape[2] != width ||
        (has_mask && (mask.shape[0] != TAPS || mask.shape[1] != height || mask.shape[2] != width))) {
        PyErr_SetString(PyExc_ValueError, "offset must be [18, H, W] and mask [9, H, W], with the "
                                          "H and W of input [H, W, C]");
        goto release;
    }
    if (columns.shape[1] != TAPS * channels || first_pixel < 0 ||
        first_pixel + columns.shape[0] > height * width) {
        PyErr_SetString(PyExc_ValueError, "columns must be [n, 9 * C] for n pixels of the image "
                                          "from first_pixel");
        goto release;
    }
    void (*const sample)(SAMPLE_RANGE_PARAMETERS) = select_sample_range();
    const Py_ssize_t pixels = columns.shape[0];
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    {
        Py_ssize_t start, stop;
        thread_share(pixels, &start, &stop);
        sample((const float *)input.buf, height, width, channels, (const float *)offset.buf,
               has_mask ? (const float *)mask.buf : NULL,
               (float *)columns.buf + start * TAPS * channels, first_pixel + start, stop - start);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
release:
    /* PyBuffer_Release ignores a buffer that was never filled (its obj is NULL). */
    PyBuffer_Release(&input);
    PyBuffer_Release(&offset);
    PyBuffer_Release(&mask);
    PyBuffer_Release(&columns);
    return result;
}

static PyMethodDef methods[] = {
    USE_INSTRUCTION_SET_METHOD,
    {"sample_columns", sample_columns, METH_VARARGS, sample_columns_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_deform_sampling",
    "Bilinear sampling of 3x3 deformable convolutions (see deform_conv.py).", -1, methods, NULL,
    NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__deform_sampling(void) { return PyModule_Create(&module); }
