/*
 * The per-pixel work of panoptic evaluation, in C: the histogram of (ground-truth id, predicted
 * id) pairs, read from segment-id arrays or straight from inflated PNG data, whose rows are
 * unfiltered and converted to ids (R + 256 G + 256**2 B) one at a time, in cache, instead of
 * going through a decoded RGB image and a full id image. Everything runs without the GIL, so
 * images are evaluated in parallel threads. Python side (checks, other PNG kinds):
 * panoptic_png.py and pq.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>

/* PNG filter types (PNG specification, section 9.2). */
enum { FILTER_NONE, FILTER_SUB, FILTER_UP, FILTER_AVERAGE, FILTER_PAETH };

/*
 * Filters work on each byte (channel) on its own, so the three id bytes R, G, B of a pixel are
 * unfiltered together, SWAR-style, inside one uint32 (alpha is not part of the id and never
 * needed). The previous row is the previous row of ids.
 */
#define LOW7 0x7F7F7Fu
#define HIGH1 0x808080u

/* Bytewise (a + b) mod 256 of the three low bytes. */
static inline uint32_t add_bytes(uint32_t a, uint32_t b)
{
    return ((a & LOW7) + (b & LOW7)) ^ ((a ^ b) & HIGH1);
}

/* Bytewise floor((a + b) / 2) of the three low bytes. */
static inline uint32_t average_bytes(uint32_t a, uint32_t b)
{
    return (a & b) + (((a ^ b) & 0xFEFEFEu) >> 1);
}

static inline uint32_t paeth_byte(uint32_t a, uint32_t b, uint32_t c)
{
    int p = (int)a + (int)b - (int)c;
    int pa = abs(p - (int)a), pb = abs(p - (int)b), pc = abs(p - (int)c);
    return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
}

static inline uint32_t paeth_bytes(uint32_t a, uint32_t b, uint32_t c)
{
    if (a == b && b == c) return a; /* flat panoptic regions: the common case */
    uint32_t predictor = 0;
    for (int shift = 0; shift < 24; shift += 8)
        predictor |= paeth_byte(a >> shift & 255, b >> shift & 255, c >> shift & 255) << shift;
    return predictor;
}

/* The R, G, B bytes of pixel ``x`` of a filtered row, as the low bytes of a uint32. */
static inline uint32_t residual(const uint8_t *row, Py_ssize_t x, Py_ssize_t width, int channels)
{
    const uint8_t *p = row + x * channels;
    uint32_t bytes;
    /* One 4-byte load, except at the end of an RGB row, which may be the end of the data. */
    if (channels == 4 || x + 1 < width) {
        memcpy(&bytes, p, 4);
        return le32toh(bytes) & 0xFFFFFFu;
    }
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}

/*
 * Blocks of BLOCK pixels whose residuals are all zero (flat regions, the bulk of a panoptic
 * image) are filled from the predictor at once, breaking the pixel-to-pixel dependency of the
 * Sub and Paeth filters; other pixels are unfiltered one by one.
 */
#define BLOCK 8

static inline int zero_block(const uint8_t *row, Py_ssize_t x, Py_ssize_t width, int channels)
{
    if (x + BLOCK > width) return 0;
    uint64_t words[4] = {0, 0, 0, 0};
    memcpy(words, row + x * channels, BLOCK * channels);
    /* Alpha bytes are included: a nonzero one only sends the block to the general path. */
    return !(words[0] | words[1] | words[2] | words[3]);
}

static inline void fill(uint32_t *ids, uint32_t value)
{
    for (int k = 0; k < BLOCK; k++) ids[k] = value;
}

/* Whether up[x - 1 .. x + BLOCK - 1] are all equal (``up_left`` is up[x - 1]). */
static inline int flat_above(const uint32_t *up, Py_ssize_t x, uint32_t up_left)
{
    uint32_t differ = 0;
    for (int k = 0; k < BLOCK; k++) differ |= up[x + k] ^ up_left;
    return !differ;
}

static inline Py_ssize_t block_end(Py_ssize_t x, Py_ssize_t width)
{
    return x + BLOCK < width ? x + BLOCK : width;
}

/*
 * Ids of one row from its ``width`` filtered pixels of ``channels`` bytes; ``up`` is the previous
 * row of ids (zeros above the first row). Returns -1 for an unknown filter type. Always inlined
 * with a constant ``channels``, one tight loop per filter type.
 */
static inline __attribute__((always_inline)) int unfilter_row(
    int filter, const uint8_t *row, const uint32_t *up, uint32_t *ids, Py_ssize_t width,
    const int channels)
{
    uint32_t left = 0, up_left = 0;
    Py_ssize_t x = 0, stop;
    switch (filter) {
    case FILTER_NONE:
        for (; x < width; x++) ids[x] = residual(row, x, width, channels);
        return 0;
    case FILTER_SUB:
        while (x < width) {
            if (zero_block(row, x, width, channels)) {
                fill(ids + x, left);
                x += BLOCK;
                continue;
            }
            for (stop = block_end(x, width); x < stop; x++)
                ids[x] = left = add_bytes(residual(row, x, width, channels), left);
        }
        return 0;
    case FILTER_UP:
        while (x < width) {
            if (zero_block(row, x, width, channels)) {
                memcpy(ids + x, up + x, BLOCK * sizeof(uint32_t));
                x += BLOCK;
                continue;
            }
            for (stop = block_end(x, width); x < stop; x++)
                ids[x] = add_bytes(residual(row, x, width, channels), up[x]);
        }
        return 0;
    case FILTER_AVERAGE:
        for (; x < width; x++)
            ids[x] = left = add_bytes(residual(row, x, width, channels), average_bytes(left, up[x]));
        return 0;
    case FILTER_PAETH:
        while (x < width) {
            /* Zero residuals under a flat row above: each pixel repeats its left neighbour. */
            if (zero_block(row, x, width, channels) && flat_above(up, x, up_left)) {
                fill(ids + x, left);
                x += BLOCK;
                continue;
            }
            for (stop = block_end(x, width); x < stop; x++) {
                uint32_t predictor = paeth_bytes(left, up[x], up_left);
                ids[x] = left = add_bytes(residual(row, x, width, channels), predictor);
                up_left = up[x];
            }
        }
        return 0;
    default:
        return -1;
    }
}

/* Rows of ids from an id array (``ids``) or from inflated PNG data (``stream``). */
typedef struct {
    Py_buffer view;
    const uint32_t *ids;
    const uint8_t *stream;
    int channels;
    uint32_t *rows; /* PNG data: two rows of ids, the current and the one above */
} IdSource;

static const char *IDS_USAGE =
    "an array of 32-bit integer ids or a tuple (inflated PNG data, channels)";

/* Fills ``source`` from ``object`` for a ``height`` x ``width`` image; -1 with an exception set. */
static int source_init(IdSource *source, PyObject *object, const char *name, Py_ssize_t height,
                       Py_ssize_t width)
{
    memset(source, 0, sizeof(*source));
    if (PyTuple_Check(object)) {
        PyObject *stream;
        if (!PyArg_ParseTuple(object, "Oi", &stream, &source->channels)) {
            PyErr_Format(PyExc_TypeError, "%s must be %s", name, IDS_USAGE);
            return -1;
        }
        if (PyObject_GetBuffer(stream, &source->view, PyBUF_C_CONTIGUOUS) < 0) return -1;
        Py_ssize_t stride = width * source->channels;
        if (source->channels != 3 && source->channels != 4) {
            PyErr_Format(PyExc_ValueError, "%s: channels must be 3 (RGB) or 4 (RGBA), not %d",
                         name, source->channels);
        } else if (source->view.len != height * (1 + stride)) {
            PyErr_Format(PyExc_ValueError,
                         "%s: PNG data has %zd bytes, not the %zd of a %zdx%zd image with %d "
                         "channels", name, source->view.len, height * (1 + stride), width,
                         height, source->channels);
        } else if (!(source->rows = calloc(2 * (size_t)width, sizeof(uint32_t)))) {
            PyErr_NoMemory();
        } else {
            source->stream = source->view.buf;
            return 0;
        }
    } else {
        if (PyObject_GetBuffer(object, &source->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            return -1;
        const char *format = source->view.format;
        if (strchr("<=@", format[0])) format++;
        if (source->view.itemsize != 4 || !strchr("iIlL", format[0]) || format[1]) {
            PyErr_Format(PyExc_TypeError, "%s must be %s, not an array of format '%s'", name,
                         IDS_USAGE, source->view.format);
        } else if (source->view.len != height * width * 4) {
            PyErr_Format(PyExc_ValueError, "%s has %zd ids, not %zdx%zd", name,
                         source->view.len / 4, height, width);
        } else {
            source->ids = source->view.buf;
            return 0;
        }
    }
    PyBuffer_Release(&source->view);
    return -1;
}

static void source_release(IdSource *source)
{
    free(source->rows);
    if (source->view.obj) PyBuffer_Release(&source->view);
}

/* Row ``y`` of ids (rows of PNG data must be read in order); NULL for a bad filter type. */
static const uint32_t *source_row(IdSource *source, Py_ssize_t y, Py_ssize_t width)
{
    if (source->ids) return source->ids + y * width;
    /* Rows alternate between the two buffers; the other one, zero at first, is the row above. */
    uint32_t *current = source->rows + (y & 1) * width, *up = source->rows + (~y & 1) * width;
    const uint8_t *row = source->stream + y * (1 + width * source->channels);
    int status = source->channels == 3 ? unfilter_row(row[0], row + 1, up, current, width, 3)
                                       : unfilter_row(row[0], row + 1, up, current, width, 4);
    return status < 0 ? NULL : current;
}

static int source_filter_type(const IdSource *source, Py_ssize_t y, Py_ssize_t width)
{
    return source->stream[y * (1 + width * source->channels)];
}

PyDoc_STRVAR(unfilter_ids_doc,
"unfilter_ids(png_data, height, width, out)\n\n"
"Segment ids of a ``height`` x ``width`` image from ``png_data`` = (inflated data of a\n"
"non-interlaced 8-bit RGB or RGBA PNG, channels 3 or 4), into ``out``: a writable buffer of\n"
"``height * width`` uint32.");

static PyObject *unfilter_ids(PyObject *self, PyObject *args)
{
    PyObject *png_data;
    Py_ssize_t height, width;
    Py_buffer out;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!nnw*", &PyTuple_Type, &png_data, &height, &width, &out))
        return NULL;
    IdSource source;
    PyObject *result = NULL;
    if (out.len != height * width * 4) {
        PyErr_Format(PyExc_ValueError, "out has %zd bytes, not %zd", out.len, height * width * 4);
    } else if (source_init(&source, png_data, "png_data", height, width) == 0) {
        Py_ssize_t bad_row = -1;
        Py_BEGIN_ALLOW_THREADS
        uint32_t *ids = out.buf;
        for (Py_ssize_t y = 0; y < height && bad_row < 0; y++) {
            const uint32_t *row = source_row(&source, y, width);
            if (row) memcpy(ids + y * width, row, width * sizeof(uint32_t));
            else bad_row = y;
        }
        Py_END_ALLOW_THREADS
        if (bad_row >= 0) {
            PyErr_Format(PyExc_ValueError, "PNG row %zd has unknown filter type %d", bad_row,
                         source_filter_type(&source, bad_row, width));
        } else {
            result = Py_NewRef(Py_None);
        }
        source_release(&source);
    }
    PyBuffer_Release(&out);
    return result;
}

/* Open-addressing table of (ground-truth id, predicted id) -> pixel count. */
typedef struct {
    uint64_t *keys;
    int64_t *counts; /* 0 marks an empty slot: every stored pair has at least one pixel */
    size_t capacity, size;
} PairTable;

static inline size_t slot_of(uint64_t key, size_t capacity)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & (capacity - 1);
}

static int table_init(PairTable *table, size_t capacity)
{
    table->keys = malloc(capacity * sizeof(uint64_t));
    table->counts = calloc(capacity, sizeof(int64_t));
    table->capacity = capacity;
    table->size = 0;
    return (table->keys && table->counts) ? 0 : -1;
}

static void table_free(PairTable *table)
{
    free(table->keys);
    free(table->counts);
}

static int table_add(PairTable *table, uint64_t key, int64_t count);

static int table_grow(PairTable *table)
{
    PairTable larger;
    if (table_init(&larger, 2 * table->capacity) < 0) {
        table_free(&larger);
        return -1;
    }
    for (size_t i = 0; i < table->capacity; i++)
        if (table->counts[i]) table_add(&larger, table->keys[i], table->counts[i]);
    table_free(table);
    *table = larger;
    return 0;
}

static int table_add(PairTable *table, uint64_t key, int64_t count)
{
    size_t slot = slot_of(key, table->capacity);
    while (table->counts[slot] && table->keys[slot] != key) slot = (slot + 1) & (table->capacity - 1);
    if (!table->counts[slot]) {
        /* Kept at most half full, so probes stay short. */
        if (2 * (table->size + 1) > table->capacity) {
            if (table_grow(table) < 0) return -1;
            return table_add(table, key, count);
        }
        table->keys[slot] = key;
        table->size++;
    }
    table->counts[slot] += count;
    return 0;
}

PyDoc_STRVAR(pair_counts_doc,
"pair_counts(gt_ids, pred_ids, height, width) -> (gt, pred, counts)\n\n"
"Pixels of each (ground-truth id, predicted id) pair of two ``height`` x ``width`` id images,\n"
"each an array of 32-bit integers (C order) or a tuple (inflated PNG data, channels), in no\n"
"particular order: ``gt`` and ``pred`` as uint32 bytes, ``counts`` as int64 bytes.");

static PyObject *pair_counts(PyObject *self, PyObject *args)
{
    PyObject *gt_object, *pred_object;
    Py_ssize_t height, width;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOnn", &gt_object, &pred_object, &height, &width)) return NULL;
    if (height < 0 || width < 0) {
        PyErr_SetString(PyExc_ValueError, "height and width must not be negative");
        return NULL;
    }
    IdSource gt, pred;
    if (source_init(&gt, gt_object, "gt_ids", height, width) < 0) return NULL;
    if (source_init(&pred, pred_object, "pred_ids", height, width) < 0) {
        source_release(&gt);
        return NULL;
    }
    PyObject *result = NULL;
    PairTable table;
    int out_of_memory = 0;
    Py_ssize_t bad_row = -1;
    const IdSource *bad_source = NULL;
    if (table_init(&table, 256) < 0) {
        out_of_memory = 1;
    } else {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t y = 0; y < height && bad_row < 0 && !out_of_memory; y++) {
            const uint32_t *g = source_row(&gt, y, width), *p = source_row(&pred, y, width);
            if (!g || !p) {
                bad_row = y;
                bad_source = g ? &pred : &gt;
                break;
            }
            /* Panoptic images are flat regions: count runs of equal pairs, not single pixels. */
            for (Py_ssize_t start = 0, end; start < width && !out_of_memory; start = end) {
                uint32_t run_gt = g[start], run_pred = p[start];
                end = start + 1;
                /* Eight pixels at a time while they all continue the run (vectorized). */
                for (; end + 8 <= width; end += 8) {
                    uint32_t differ = 0;
                    for (int k = 0; k < 8; k++) differ |= (g[end + k] ^ run_gt) | (p[end + k] ^ run_pred);
                    if (differ) break;
                }
                while (end < width && g[end] == run_gt && p[end] == run_pred) end++;
                out_of_memory = table_add(&table, (uint64_t)run_gt << 32 | run_pred, end - start);
            }
        }
        Py_END_ALLOW_THREADS
    }
    if (out_of_memory) {
        PyErr_NoMemory();
    } else if (bad_row >= 0) {
        PyErr_Format(PyExc_ValueError, "%s: PNG row %zd has unknown filter type %d",
                     bad_source == &gt ? "gt_ids" : "pred_ids", bad_row,
                     source_filter_type(bad_source, bad_row, width));
    } else {
        PyObject *gt_bytes = PyBytes_FromStringAndSize(NULL, table.size * 4);
        PyObject *pred_bytes = PyBytes_FromStringAndSize(NULL, table.size * 4);
        PyObject *count_bytes = PyBytes_FromStringAndSize(NULL, table.size * 8);
        if (gt_bytes && pred_bytes && count_bytes) {
            uint32_t *gt_out = (uint32_t *)PyBytes_AS_STRING(gt_bytes);
            uint32_t *pred_out = (uint32_t *)PyBytes_AS_STRING(pred_bytes);
            int64_t *count_out = (int64_t *)PyBytes_AS_STRING(count_bytes);
            size_t k = 0;
            for (size_t i = 0; i < table.capacity; i++) {
                if (!table.counts[i]) continue;
                gt_out[k] = (uint32_t)(table.keys[i] >> 32);
                pred_out[k] = (uint32_t)table.keys[i];
                count_out[k++] = table.counts[i];
            }
            result = PyTuple_Pack(3, gt_bytes, pred_bytes, count_bytes);
        }
        Py_XDECREF(gt_bytes);
        Py_XDECREF(pred_bytes);
        Py_XDECREF(count_bytes);
    }
    table_free(&table);
    source_release(&gt);
    source_release(&pred);
    return result;
}

static PyMethodDef methods[] = {
    {"unfilter_ids", unfilter_ids, METH_VARARGS, unfilter_ids_doc},
    {"pair_counts", pair_counts, METH_VARARGS, pair_counts_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pq_kernels",
    "Per-pixel kernels of panoptic evaluation (see panoptic_png.py and pq.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pq_kernels(void) { return PyModule_Create(&module); }
