/*
 * Argument checks shared by the acceleration layer's convolution kernels, which take float32
 * buffers (numpy views of torch tensors). Include after Python.h.
 */
#ifndef PANOPTIC_ZOO_FLOAT32_BUFFERS_H
#define PANOPTIC_ZOO_FLOAT32_BUFFERS_H

/* Whether ``buffer`` is C-contiguous float32 with ``ndim`` dimensions; sets the error if not. */
static int check_float32(const Py_buffer *buffer, int ndim, const char *name)
{
    if (buffer->ndim == ndim && buffer->itemsize == 4 && buffer->format[0] == 'f' &&
        PyBuffer_IsContiguous(buffer, 'C'))
        return 1;
    PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous float32 buffer with %d dimensions",
                 name, ndim);
    return 0;
}

/* ``object``'s buffer into ``buffer`` (C-contiguous; writable when ``writable``), checked by
   check_float32; 0 with the error set if either step fails. The caller releases ``buffer`` in
   both cases (PyBuffer_Release ignores one that was never filled: its obj is NULL). */
static int get_float32_buffer(PyObject *object, Py_buffer *buffer, int ndim, const char *name,
                              int writable)
{
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    return PyObject_GetBuffer(object, buffer, flags) == 0 && check_float32(buffer, ndim, name);
}

#endif
