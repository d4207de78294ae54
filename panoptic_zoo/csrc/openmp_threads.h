/*
 * The C kernels run on PyTorch's own OpenMP threads. Built with -fopenmp, a module needs
 * libgomp.so.1, the soname of the libgomp torch loads first, so the loader reuses torch's
 * runtime and thread pool: a kernel between two PyTorch ops runs on the threads that ran them
 * (tests/acceleration/test_class_maps.py checks that one OpenMP runtime is loaded; where torch
 * ships its runtime under another name, a second one loads: still correct, with its own
 * threads). Why: with Python threads, torch's OpenMP threads kept spinning after each op
 * (GOMP's wait policy), in the kernel's way: a kernel between matrix products ran about twice
 * as long.
 * Callers pass torch.get_num_threads().
 */
#ifndef PANOPTIC_ZOO_OPENMP_THREADS_H
#define PANOPTIC_ZOO_OPENMP_THREADS_H

#include <omp.h>

/* Inside a parallel region: this thread's share [*first, *stop) of items [0, count), near-equal
   consecutive ranges in thread order. */
static inline void thread_share(Py_ssize_t count, Py_ssize_t *first, Py_ssize_t *stop)
{
    const Py_ssize_t team = omp_get_num_threads(), member = omp_get_thread_num();
    *first = count * member / team;
    *stop = count * (member + 1) / team;
}

/* Whether a ``threads`` argument is at least 1; sets the error if not. */
static int check_threads(int threads)
{
    if (threads >= 1)
        return 1;
    PyErr_SetString(PyExc_ValueError, "threads must be at least 1");
    return 0;
}

#endif
