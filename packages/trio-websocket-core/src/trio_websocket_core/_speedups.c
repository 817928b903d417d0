/* Masking in C (RFC 6455 section 5.3): the optional accelerator of _mask.py.
 *
 * The build hook (hatch_build.py) compiles this when a C compiler is at hand;
 * without one the wheel is pure Python and _mask.py's own functions run. Each
 * function here gives exactly the bytes of its pure-Python twin, which the
 * tests check. Eight bytes at a time, through memcpy so that no address needs
 * to be aligned; compilers turn the loop into vector instructions.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* out[0:size] = data[0:size] XOR the 4-byte key, repeated from data[0] on.
 * out may be data itself. */
static void
xor_key(unsigned char *out, const unsigned char *data, Py_ssize_t size,
        const unsigned char *key)
{
    uint64_t word, key8;
    unsigned char pattern[8];
    Py_ssize_t i = 0;

    memcpy(pattern, key, 4);
    memcpy(pattern + 4, key, 4);
    memcpy(&key8, pattern, 8);
    for (; i + 8 <= size; i += 8) {
        memcpy(&word, data + i, 8);
        word ^= key8;
        memcpy(out + i, &word, 8);
    }
    for (; i < size; i++) {
        out[i] = data[i] ^ pattern[i & 7];
    }
}

static int
get_key(PyObject *object, unsigned char key[4])
{
    Py_buffer view;

    if (PyObject_GetBuffer(object, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view.len != 4) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a masking key is 4 bytes");
        return -1;
    }
    memcpy(key, view.buf, 4);
    PyBuffer_Release(&view);
    return 0;
}

PyDoc_STRVAR(mask_doc,
"mask(data, key) -> bytes\n\nReturn data XORed with the 4-byte key.");

static PyObject *
mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    unsigned char key[4];
    PyObject *result;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "mask() takes data and key");
        return NULL;
    }
    if (get_key(args[1], key) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    /* A new object, never one of the interpreter's shared 0- and 1-byte ones. */
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        xor_key((unsigned char *)PyBytes_AS_STRING(result), (const unsigned char *)data.buf,
                data.len, key);
    }
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(mask_in_place_doc,
"mask_in_place(buffer, start, end, key) -> None\n\n"
"XOR buffer[start:end] with the 4-byte key, in place.");

static PyObject *
mask_in_place(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buffer;
    Py_ssize_t start, end;
    unsigned char key[4];

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "mask_in_place() takes buffer, start, end and key");
        return NULL;
    }
    start = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    end = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if (end == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (get_key(args[3], key) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &buffer, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (start < 0 || end > buffer.len || start > end) {
        PyBuffer_Release(&buffer);
        PyErr_SetString(PyExc_IndexError, "mask_in_place() range is outside the buffer");
        return NULL;
    }
    xor_key((unsigned char *)buffer.buf + start, (const unsigned char *)buffer.buf + start,
            end - start, key);
    PyBuffer_Release(&buffer);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(xor_doc,
"xor(data, keys) -> data\n\n"
"XOR data with keys, byte for byte and in place; both are as long.");

static PyObject *
xor(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, keys;
    unsigned char *out;
    const unsigned char *in;
    uint64_t word, other;
    Py_ssize_t i = 0;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "xor() takes data and keys");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &keys, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (keys.len != data.len) {
        PyBuffer_Release(&keys);
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "xor() needs data and keys of one length");
        return NULL;
    }
    out = (unsigned char *)data.buf;
    in = (const unsigned char *)keys.buf;
    for (; i + 8 <= data.len; i += 8) {
        memcpy(&word, out + i, 8);
        memcpy(&other, in + i, 8);
        word ^= other;
        memcpy(out + i, &word, 8);
    }
    for (; i < data.len; i++) {
        out[i] ^= in[i];
    }
    PyBuffer_Release(&keys);
    PyBuffer_Release(&data);
    return Py_NewRef(args[0]);
}

static PyMethodDef methods[] = {
    {"mask", (PyCFunction)(void (*)(void))mask, METH_FASTCALL, mask_doc},
    {"mask_in_place", (PyCFunction)(void (*)(void))mask_in_place, METH_FASTCALL,
     mask_in_place_doc},
    {"xor", (PyCFunction)(void (*)(void))xor, METH_FASTCALL, xor_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "trio_websocket_core._speedups",
    .m_doc = "Masking in C, the optional accelerator of trio_websocket_core._mask.",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&module);
}
