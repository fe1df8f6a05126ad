/* Two SHA-256 chains over one byte stream, interleaved on one core (x86 SHA extensions).
 *
 * A safetensors file has two SHA-256 values that matter: of the whole file (AutoV2, the Hub's LFS oid) and of
 * its tensor data, the bytes after the header (kohya's sshs_model_hash, AutoV3). Each chain is sequential and,
 * with the SHA extensions, bound by the latency of SHA256RNDS2 (4 cycles on AMD Zen and Intel cores, two
 * issued per cycle or every other cycle): one chain leaves the unit idle half the time. Two independent chains
 * interleaved instruction by instruction fill it, so both values cost about what one costs (measured on a Zen
 * core: one chain 0.61 s/GiB, both interleaved 0.65-0.73 s/GiB, both one after the other 1.23). This is the
 * "multi-buffer" technique of Intel's ISA-L crypto library (sha256_ni_x2), written here for the two offsets
 * of one file.
 *
 * Sha256Pair(offset).update(data) feeds chain A every byte and chain B the bytes from absolute position
 * `offset` on; digests() returns both 32-byte digests. The GIL is released while a large buffer is hashed.
 * AVAILABLE is False where the module was built without the kernel (not x86, not GCC/Clang) or the CPU lacks
 * the SHA extensions; lorahub then uses hashlib (lorahub/adapters/fingerprint.py).
 *
 * The round structure follows the SHA extensions' reference sequence (Intel, "Intel SHA Extensions", 2013;
 * Gulley et al.), written as one macro per group of four rounds. Tested against hashlib in
 * tests/adapters/test_sha256x2.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "pythread.h"
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_KERNEL 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define HAVE_KERNEL 0
#endif

static const uint32_t IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#if HAVE_KERNEL

static const uint32_t K[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define KERNEL __attribute__((target("sha,sse4.1,ssse3")))

/* The state as the SHA instructions hold it: ABEF and CDGH. */
KERNEL static inline void load_state(const uint32_t s[8], __m128i *abef, __m128i *cdgh) {
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[0]), 0xB1); /* CDAB */
    __m128i u = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[4]), 0x1B); /* EFGH */
    *abef = _mm_alignr_epi8(t, u, 8);
    *cdgh = _mm_blend_epi16(u, t, 0xF0);
}

KERNEL static inline void store_state(uint32_t s[8], __m128i abef, __m128i cdgh) {
    __m128i t = _mm_shuffle_epi32(abef, 0x1B); /* FEBA */
    __m128i u = _mm_shuffle_epi32(cdgh, 0xB1); /* DCHG */
    _mm_storeu_si128((__m128i *)&s[0], _mm_blend_epi16(t, u, 0xF0)); /* DCBA */
    _mm_storeu_si128((__m128i *)&s[4], _mm_alignr_epi8(u, t, 8));    /* HGFE */
}

/* Rounds 4g..4g+3 of one chain. W is the message vector of this group, WP the previous one, WN the next
 * one (of four kept in rotation). Groups 3-14 finish the next vector (msg2); groups 1-12 start the one
 * after (msg1). g is a constant at every use: the conditions fold away. */
#define ROUNDS(g, S0, S1, W, WP, WN)                                                                   \
    do {                                                                                              \
        __m128i m_ = _mm_add_epi32(W, _mm_load_si128((const __m128i *)&K[4 * (g)]));                  \
        S1 = _mm_sha256rnds2_epu32(S1, S0, m_);                                                       \
        if ((g) >= 3 && (g) <= 14) {                                                                  \
            WN = _mm_add_epi32(WN, _mm_alignr_epi8(W, WP, 4));                                        \
            WN = _mm_sha256msg2_epu32(WN, W);                                                         \
        }                                                                                             \
        m_ = _mm_shuffle_epi32(m_, 0x0E);                                                             \
        S0 = _mm_sha256rnds2_epu32(S0, S1, m_);                                                       \
        if ((g) >= 1 && (g) <= 12) WP = _mm_sha256msg1_epu32(WP, W);                                  \
    } while (0)

#define GROUP(g, S0, S1, M)                                                                            \
    do {                                                                                              \
        if (((g) & 3) == 0) ROUNDS(g, S0, S1, M##0, M##3, M##1);                                      \
        else if (((g) & 3) == 1) ROUNDS(g, S0, S1, M##1, M##0, M##2);                                 \
        else if (((g) & 3) == 2) ROUNDS(g, S0, S1, M##2, M##1, M##3);                                 \
        else ROUNDS(g, S0, S1, M##3, M##2, M##0);                                                     \
    } while (0)

#define LOAD(M, p, mask)                                                                               \
    __m128i M##0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)((p) + 0)), mask);              \
    __m128i M##1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)((p) + 16)), mask);             \
    __m128i M##2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)((p) + 32)), mask);             \
    __m128i M##3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)((p) + 48)), mask)

/* nblocks 64-byte blocks of one chain. */
KERNEL static void blocks1(uint32_t st[8], const uint8_t *p, size_t nblocks) {
    if (!nblocks) return;
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i S0, S1;
    load_state(st, &S0, &S1);
    while (nblocks--) {
        __m128i A0 = S0, A1 = S1;
        LOAD(M, p, mask);
        GROUP(0, S0, S1, M); GROUP(1, S0, S1, M); GROUP(2, S0, S1, M); GROUP(3, S0, S1, M);
        GROUP(4, S0, S1, M); GROUP(5, S0, S1, M); GROUP(6, S0, S1, M); GROUP(7, S0, S1, M);
        GROUP(8, S0, S1, M); GROUP(9, S0, S1, M); GROUP(10, S0, S1, M); GROUP(11, S0, S1, M);
        GROUP(12, S0, S1, M); GROUP(13, S0, S1, M); GROUP(14, S0, S1, M); GROUP(15, S0, S1, M);
        S0 = _mm_add_epi32(S0, A0);
        S1 = _mm_add_epi32(S1, A1);
        p += 64;
    }
    store_state(st, S0, S1);
}

/* nblocks blocks of each of two chains, interleaved: chain a at pa, chain b at pb. */
KERNEL static void blocks2(uint32_t sa[8], const uint8_t *pa, uint32_t sb[8], const uint8_t *pb, size_t nblocks) {
    if (!nblocks) return;
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i S0, S1, T0, T1;
    load_state(sa, &S0, &S1);
    load_state(sb, &T0, &T1);
    while (nblocks--) {
        __m128i A0 = S0, A1 = S1, B0 = T0, B1 = T1;
        LOAD(M, pa, mask);
        LOAD(N, pb, mask);
#define BOTH(g) GROUP(g, S0, S1, M); GROUP(g, T0, T1, N)
        BOTH(0); BOTH(1); BOTH(2); BOTH(3); BOTH(4); BOTH(5); BOTH(6); BOTH(7);
        BOTH(8); BOTH(9); BOTH(10); BOTH(11); BOTH(12); BOTH(13); BOTH(14); BOTH(15);
#undef BOTH
        S0 = _mm_add_epi32(S0, A0);
        S1 = _mm_add_epi32(S1, A1);
        T0 = _mm_add_epi32(T0, B0);
        T1 = _mm_add_epi32(T1, B1);
        pa += 64;
        pb += 64;
    }
    store_state(sa, S0, S1);
    store_state(sb, T0, T1);
}

static int cpu_supported(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & (1u << 9)) || !(c & (1u << 19))) return 0; /* SSSE3, SSE4.1 */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1; /* SHA */
}

#else /* no kernel: the type exists, AVAILABLE is False and the constructor refuses */

static void blocks1(uint32_t st[8], const uint8_t *p, size_t nblocks) { (void)st; (void)p; (void)nblocks; }
static void blocks2(uint32_t sa[8], const uint8_t *pa, uint32_t sb[8], const uint8_t *pb, size_t nblocks) {
    (void)sa; (void)pa; (void)sb; (void)pb; (void)nblocks;
}
static int cpu_supported(void) { return 0; }

#endif

static int available = 0;

/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    uint32_t state[8];
    uint8_t tail[64];
    size_t ntail;
    uint64_t length; /* bytes fed */
} Chain;

typedef struct {
    PyObject_HEAD
    Chain chain[2];
    unsigned long long offset; /* chain b starts at this absolute position */
    unsigned long long pos;    /* bytes fed to update() so far */
    PyThread_type_lock lock;
} PairObject;

static void chain_init(Chain *c) {
    memcpy(c->state, IV, sizeof IV);
    c->ntail = 0;
    c->length = 0;
}

/* Complete the chain's partial block from *p; returns the bytes taken. */
static size_t chain_fill(Chain *c, const uint8_t *p, size_t n) {
    if (!c->ntail || !n) return 0;
    size_t k = 64 - c->ntail;
    if (k > n) k = n;
    memcpy(c->tail + c->ntail, p, k);
    c->ntail += k;
    if (c->ntail == 64) {
        blocks1(c->state, c->tail, 1);
        c->ntail = 0;
    }
    return k;
}

static void chain_keep(Chain *c, const uint8_t *p, size_t n) {
    memcpy(c->tail + c->ntail, p, n); /* n < 64 - ntail: called with whole blocks consumed */
    c->ntail += n;
}

/* Feed chain a (pa, la) and chain b (pb, lb), interleaving their whole blocks. */
static void pair_feed(PairObject *self, const uint8_t *pa, size_t la, const uint8_t *pb, size_t lb) {
    Chain *a = &self->chain[0], *b = &self->chain[1];
    a->length += la;
    b->length += lb;
    size_t k = chain_fill(a, pa, la);
    pa += k;
    la -= k;
    k = chain_fill(b, pb, lb);
    pb += k;
    lb -= k;
    size_t na = a->ntail ? 0 : la / 64, nb = b->ntail ? 0 : lb / 64;
    size_t both = na < nb ? na : nb;
    blocks2(a->state, pa, b->state, pb, both);
    blocks1(a->state, pa + 64 * both, na - both);
    blocks1(b->state, pb + 64 * both, nb - both);
    pa += 64 * na;
    la -= 64 * na;
    pb += 64 * nb;
    lb -= 64 * nb;
    chain_keep(a, pa, la);
    chain_keep(b, pb, lb);
}

static void chain_digest(const Chain *c, uint8_t out[32]) {
    uint32_t st[8];
    uint8_t block[128];
    memcpy(st, c->state, sizeof st);
    size_t n = c->ntail;
    memcpy(block, c->tail, n);
    block[n++] = 0x80;
    size_t total = (n + 8 <= 64) ? 64 : 128;
    memset(block + n, 0, total - n);
    uint64_t bits = c->length * 8;
    for (int i = 0; i < 8; i++) block[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    blocks1(st, block, total / 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(st[i] >> 24);
        out[4 * i + 1] = (uint8_t)(st[i] >> 16);
        out[4 * i + 2] = (uint8_t)(st[i] >> 8);
        out[4 * i + 3] = (uint8_t)st[i];
    }
}

/* hashlib's threshold for releasing the GIL. */
#define GIL_MINSIZE 2048

static PyObject *pair_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"offset", NULL};
    long long offset = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L", kwlist, &offset)) return NULL;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "Sha256Pair: offset must not be negative");
        return NULL;
    }
    if (!available) {
        PyErr_SetString(PyExc_RuntimeError, "Sha256Pair: this build or CPU has no SHA extensions (see AVAILABLE)");
        return NULL;
    }
    PairObject *self = (PairObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    chain_init(&self->chain[0]);
    chain_init(&self->chain[1]);
    self->offset = (unsigned long long)offset;
    self->pos = 0;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void pair_dealloc(PairObject *self) {
    if (self->lock) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void pair_update_locked(PairObject *self, const uint8_t *p, size_t n) {
    size_t skip = 0; /* bytes of this buffer before chain b's start */
    if (self->offset > self->pos) {
        unsigned long long before = self->offset - self->pos;
        skip = before < n ? (size_t)before : n;
    }
    pair_feed(self, p, n, p + skip, n - skip);
    self->pos += n;
}

static PyObject *pair_update(PairObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    size_t n = (size_t)view.len;
    if (n >= GIL_MINSIZE) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        pair_update_locked(self, (const uint8_t *)view.buf, n);
        PyThread_release_lock(self->lock);
        Py_END_ALLOW_THREADS
    } else {
        if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
            Py_BEGIN_ALLOW_THREADS
            PyThread_acquire_lock(self->lock, WAIT_LOCK);
            Py_END_ALLOW_THREADS
        }
        pair_update_locked(self, (const uint8_t *)view.buf, n);
        PyThread_release_lock(self->lock);
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *pair_digests(PairObject *self, PyObject *Py_UNUSED(ignored)) {
    uint8_t a[32], b[32];
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    chain_digest(&self->chain[0], a);
    chain_digest(&self->chain[1], b);
    PyThread_release_lock(self->lock);
    return Py_BuildValue("(y#y#)", (const char *)a, (Py_ssize_t)32, (const char *)b, (Py_ssize_t)32);
}

static PyMethodDef pair_methods[] = {
    {"update", (PyCFunction)pair_update, METH_O,
     "update(data): feed the next bytes (any buffer); chain b takes those at or past offset."},
    {"digests", (PyCFunction)pair_digests, METH_NOARGS,
     "digests() -> (a, b): the 32-byte SHA-256 of every byte fed, and of those from offset on."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PairType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lorahub._sha256x2.Sha256Pair",
    .tp_basicsize = sizeof(PairObject),
    .tp_dealloc = (destructor)pair_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sha256Pair(offset): SHA-256 of a stream and of its bytes from offset on, interleaved on one core.",
    .tp_methods = pair_methods,
    .tp_new = pair_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "lorahub._sha256x2",
    "Two SHA-256 chains over one stream, interleaved (x86 SHA extensions). See the C source's comment.", -1,
    NULL,
};

PyMODINIT_FUNC PyInit__sha256x2(void) {
    available = HAVE_KERNEL && cpu_supported();
    if (PyType_Ready(&PairType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&PairType);
    if (PyModule_AddObject(m, "Sha256Pair", (PyObject *)&PairType) < 0) {
        Py_DECREF(&PairType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "AVAILABLE", PyBool_FromLong(available)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
