/* One pass over a chunk of an access log in a `[%t] "%r"` format (see relayguard/logs/fastpath.py).
 *
 * The pure-Python fast path makes three C-level passes over every chunk (newlines, minute
 * stamps, proxy-request candidates); this does the same work in one, line by line, with the
 * same meaning as the Python reference (`_minutes_per_line` and the `_CANDIDATE` regex):
 * ~0.1 s per 1M combined lines on the reference machine, where the three passes took ~0.4 s.
 * `parse_stock` then parses the candidate lines of the stock formats (common, combined, nginx)
 * as their regexes do, ~0.6 µs a line where the regex and the field conversions take 3-6:
 * a spam cannon's log is nothing but candidates. It is optional: without a C compiler at
 * install time the Python code runs, slower, with the same results. The input is untrusted:
 * every read is bounded by the line's end, which is bounded by the buffer's length.
 */
#define _GNU_SOURCE  /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* a minute key: "dd/Mon/yyyy:HH:MM" (17 bytes) followed by the zone "+hhmm" (5 bytes) */
#define KEY_LEN 22
#define SAMPLE_LEN 200

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline int is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
static inline int is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }

/* `p` is just after a line's first '['; `end` is the line's end. True when
 * `dd/Mon/yyyy:HH:MM:SS +hhmm]` follows (the regex `_TS`), with its minute key put in `key`.
 * Written out rather than driven by a pattern string: it runs once per line. */
static int stamp_at(const unsigned char *p, const unsigned char *end, unsigned char *key)
{
    if (end - p < 27)
        return 0;
    if (!(is_digit(p[0]) && is_digit(p[1]) && p[2] == '/' && is_upper(p[3]) &&
          is_lower(p[4]) && is_lower(p[5]) && p[6] == '/' && is_digit(p[7]) &&
          is_digit(p[8]) && is_digit(p[9]) && is_digit(p[10]) && p[11] == ':' &&
          is_digit(p[12]) && is_digit(p[13]) && p[14] == ':' && is_digit(p[15]) &&
          is_digit(p[16]) && p[17] == ':' && is_digit(p[18]) && is_digit(p[19]) &&
          p[20] == ' ' && (p[21] == '+' || p[21] == '-') && is_digit(p[22]) &&
          is_digit(p[23]) && is_digit(p[24]) && is_digit(p[25]) && p[26] == ']'))
        return 0;
    memcpy(key, p, 17);
    memcpy(key + 17, p + 21, 5);
    return 1;
}

/* stamp_at's answer for a stamp in the minute `key` (a valid one: stamp_at's): its first 17
 * bytes and zone are the key's, so only the seconds and the punctuation are left to check. */
static inline int same_minute(const unsigned char *p, const unsigned char *end,
                              const unsigned char *key)
{
    return end - p >= 27 && memcmp(p, key, 17) == 0 && p[17] == ':' && is_digit(p[18]) &&
           is_digit(p[19]) && p[20] == ' ' && memcmp(p + 21, key + 17, 5) == 0 && p[26] == ']';
}

/* True when the `]` at `p` starts `] "METHOD target` whose target is not origin-form: the
 * regex `\] "[^ "\n]{1,24}+ [^/* \n]` (possessive), bounded by the line's end `end`. */
static int candidate_at(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 3 || p[1] != ' ' || p[2] != '"')
        return 0;
    const unsigned char *q = p + 3;
    Py_ssize_t run = 0;
    while (q < end && run < 25 && *q != ' ' && *q != '"') {
        q++;
        run++;
    }
    if (run < 1 || run > 24 || q + 1 >= end || *q != ' ')
        return 0;
    unsigned char t = q[1];
    return t != '/' && t != '*' && t != ' ';
}

/* minutes[key] += count */
static int add_minutes(PyObject *minutes, const unsigned char *key, Py_ssize_t count)
{
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, KEY_LEN);
    if (k == NULL)
        return -1;
    PyObject *old = PyDict_GetItemWithError(minutes, k);  /* borrowed */
    Py_ssize_t before = 0;
    if (old != NULL) {
        before = PyLong_AsSsize_t(old);
        if (before == -1 && PyErr_Occurred()) {
            Py_DECREF(k);
            return -1;
        }
    } else if (PyErr_Occurred()) {
        Py_DECREF(k);
        return -1;
    }
    PyObject *v = PyLong_FromSsize_t(before + count);
    int rc = v == NULL ? -1 : PyDict_SetItem(minutes, k, v);
    Py_XDECREF(v);
    Py_DECREF(k);
    return rc;
}

/* list.append((line_no, data[start:start + len])) */
static int append_line(PyObject *list, Py_ssize_t line_no, const unsigned char *start,
                       Py_ssize_t len)
{
    PyObject *item = Py_BuildValue("(ny#)", line_no, (const char *)start, len);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

PyDoc_STRVAR(scan_doc,
"scan(data, max_candidate_line, max_samples)\n"
"    -> (lines, candidates, minutes, stampless, samples, longest)\n\n"
"Lines of `data` (split at b'\\n'; an unterminated last line counts); the candidate lines\n"
"(CONNECT / absolute-URI requests) as (line number, first max_candidate_line bytes); requests\n"
"per minute key (b'dd/Mon/yyyy:HH:MM+hhmm'); lines whose first '[' opens no time stamp, and\n"
"the first max_samples of them as (line number, first 200 bytes); the longest line's length\n"
"(without its newline), so that the caller looks for over-long lines only where there are.");

static PyObject *scan(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t max_line, max_samples;
    if (!PyArg_ParseTuple(args, "y*nn", &buf, &max_line, &max_samples))
        return NULL;
    if (max_line < 0 || max_samples < 0) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "max_candidate_line and max_samples must be >= 0");
        return NULL;
    }
    PyObject *candidates = PyList_New(0);
    PyObject *minutes = PyDict_New();
    PyObject *samples = PyList_New(0);
    PyObject *result = NULL;
    if (candidates == NULL || minutes == NULL || samples == NULL)
        goto done;

    const unsigned char *data = buf.buf;
    const unsigned char *stop = data + buf.len;
    const unsigned char *ls = data;
    unsigned char cur[KEY_LEN], key[KEY_LEN];
    Py_ssize_t line_no = 0, run = 0, stampless = 0, longest = 0;
    while (ls < stop) {
        const unsigned char *nl = memchr(ls, '\n', (size_t)(stop - ls));
        const unsigned char *le = nl != NULL ? nl : stop;
        line_no++;
        if (le - ls > longest)
            longest = le - ls;
        const unsigned char *br = memchr(ls, '[', (size_t)(le - ls));
        if (br != NULL && run > 0 && same_minute(br + 1, le, cur)) {
            run++;  /* (most lines: the minute of the line before) */
        } else if (br != NULL && stamp_at(br + 1, le, key)) {
            if (run > 0 && memcmp(cur, key, KEY_LEN) == 0) {
                run++;
            } else {
                if (run > 0 && add_minutes(minutes, cur, run) < 0)
                    goto done;
                memcpy(cur, key, KEY_LEN);
                run = 1;
            }
        } else {
            stampless++;
            if (PyList_GET_SIZE(samples) < max_samples) {
                Py_ssize_t len = le - ls < SAMPLE_LEN ? le - ls : SAMPLE_LEN;
                if (append_line(samples, line_no, ls, len) < 0)
                    goto done;
            }
        }
        const unsigned char *p = ls;
        while ((p = memchr(p, ']', (size_t)(le - p))) != NULL) {
            if (candidate_at(p, le)) {
                Py_ssize_t len = le - ls < max_line ? le - ls : max_line;
                if (append_line(candidates, line_no, ls, len) < 0)
                    goto done;
                break;
            }
            p++;
        }
        if (nl == NULL)
            break;
        ls = nl + 1;
    }
    if (run > 0 && add_minutes(minutes, cur, run) < 0)
        goto done;
    result = Py_BuildValue("(nOOnOn)", line_no, candidates, minutes, stampless, samples,
                           longest);
done:
    Py_XDECREF(candidates);
    Py_XDECREF(minutes);
    Py_XDECREF(samples);
    PyBuffer_Release(&buf);
    return result;
}

PyDoc_STRVAR(newlines_doc,
"newlines(data) -> int\n\n"
"bytes.count(b'\\n'), 4x faster: `watch` counts the lines of every block it reads.");

static PyObject *newlines(PyObject *self, PyObject *arg)
{
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = buf.buf;
    Py_ssize_t left = buf.len, count = 0;
    /* blocks of 255 bytes keep a byte-wide sum from overflowing, so the compiler turns the
     * loop into byte-lane vector compares (7 GB/s here, where bytes.count gives 1.7) */
    while (left >= 255) {
        uint8_t in_block = 0;
        for (int i = 0; i < 255; i++)
            in_block += p[i] == '\n';
        count += in_block;
        p += 255;
        left -= 255;
    }
    for (Py_ssize_t i = 0; i < left; i++)
        count += p[i] == '\n';
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(count);
}

PyDoc_STRVAR(sizes_304_doc,
"sizes_304(data, end) -> (without_size, with_size)\n\n"
"304 answers in data[:end] (the regex `\" 304 (-|0 )?` of fastpath.py): those logged with no\n"
"size (`-` or `0 ` after the status) and the others. One memmem pass, where the regex engine\n"
"took a fifth of a chunk's scan.");

/* The first `needle` (nlen bytes) in [p, stop), or NULL: memmem's result, sixteen positions
 * at a time where SSE2 is (every x86-64) by the needle's first byte and its byte at `pick`
 * together, each hit then compared whole. Picked well (`" 304 `'s `4`: a status line's
 * `" 200 ` has the one but not the other), few positions pass both; memmem's generic search
 * read a chunk's first MiB at a third of this speed. */
static const unsigned char *find_at(const unsigned char *p, const unsigned char *stop,
                                    const unsigned char *needle, size_t nlen, size_t pick)
{
#if defined(__SSE2__)
    const __m128i first = _mm_set1_epi8((char)needle[0]), other = _mm_set1_epi8((char)needle[pick]);
    while (stop - p >= (Py_ssize_t)(16 + nlen)) {  /* the block at p+pick, whole needles inside */
        __m128i a = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)p), first);
        __m128i b = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + pick)), other);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_and_si128(a, b));
        while (m) {
            const unsigned char *hit = p + __builtin_ctz(m);
            if (memcmp(hit, needle, nlen) == 0)
                return hit;
            m &= m - 1;
        }
        p += 16;
    }
#endif
    return stop - p >= (Py_ssize_t)nlen ? memmem(p, (size_t)(stop - p), needle, nlen) : NULL;
}

static PyObject *sizes_304(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t end;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &end))
        return NULL;
    if (end < 0 || end > buf.len)
        end = buf.len;
    const unsigned char *data = buf.buf, *p = data, *stop = data + end;
    static const char needle[] = "\" 304 ";
    const size_t len = sizeof(needle) - 1;
    Py_ssize_t bare = 0, sized = 0;
    while ((size_t)(stop - p) >= len &&
           (p = find_at(p, stop, (const unsigned char *)needle, len, 4)) != NULL) {
        const unsigned char *q = p + len;
        if ((q < stop && *q == '-') || (stop - q >= 2 && q[0] == '0' && q[1] == ' '))
            bare++;
        else
            sized++;
        p = q;
    }
    PyBuffer_Release(&buf);
    return Py_BuildValue("(nn)", bare, sized);
}

PyDoc_STRVAR(own_gets_doc,
"own_gets(data, end, paths, per_path) -> [(path, size), ...]\n\n"
"Sizes of 2xx GETs of the given paths (bytes, no whitespace or quotes) in data[:end], in file\n"
"order, at most per_path each, stopping once every path has them: what\n"
"`fastpath._local_sizes`' regex `\"GET (p1|p2|...) HTTP/1\\.[01]\" 2\\d\\d (\\d+)` finds, paths\n"
"decoded as it decodes them. A path is one token (it ends at the space before HTTP), so at\n"
"most one of them can match at a `\"GET `, whatever the order of the alternatives.");

/* one match of own_gets: where its `"GET ` is, which path, its size's digits */
typedef struct {
    const unsigned char *at, *digits, *digits_end;
    Py_ssize_t path;
} own_get;

static PyObject *own_gets(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t end, per_path;
    PyObject *paths;
    if (!PyArg_ParseTuple(args, "y*nO!n", &buf, &end, &PyList_Type, &paths, &per_path))
        return NULL;
    Py_ssize_t npaths = PyList_GET_SIZE(paths);
    if (per_path < 0)
        per_path = 0;
    PyObject *out = PyList_New(0);
    own_get *hits = PyMem_Calloc(npaths && per_path ? (size_t)(npaths * per_path) : 1,
                                 sizeof(own_get));
    unsigned char *needle = NULL;
    Py_ssize_t nhits = 0;
    if (out == NULL || hits == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < npaths; i++) {
        if (!PyBytes_Check(PyList_GET_ITEM(paths, i))) {
            PyErr_SetString(PyExc_TypeError, "paths must be bytes");
            goto fail;
        }
    }
    if (end < 0 || end > buf.len)
        end = buf.len;
    const unsigned char *data = buf.buf, *stop = data + end;
    /* Each path's own search for `"GET <path> HTTP/1.`, its matches put in file order after:
     * a path is one token, so two matches never overlap and each path's first per_path are
     * those of one search over all of them. A search for `"GET ` alone stopped at every line
     * of a web log (a call and a compare per line: a quarter of the worker's scan). */
    for (Py_ssize_t i = 0; i < npaths; i++) {
        PyObject *path = PyList_GET_ITEM(paths, i);
        Py_ssize_t plen = PyBytes_GET_SIZE(path), nlen = plen + 13, found = 0;
        PyMem_Free(needle);
        needle = PyMem_Malloc((size_t)nlen);
        if (needle == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(needle, "\"GET ", 5);
        memcpy(needle + 5, PyBytes_AS_STRING(path), (size_t)plen);
        memcpy(needle + 5 + plen, " HTTP/1.", 8);
        const unsigned char *p = data;
        while (found < per_path && stop - p >= nlen + 8 &&
               (p = find_at(p, stop, needle, (size_t)nlen, (size_t)nlen - 1)) != NULL) {
            const unsigned char *q = p + 5 + plen;  /* ` HTTP/1.x" 2dd ` and a digit */
            if (stop - q < 16)
                break;  /* (later ones are nearer the end still) */
            if ((q[8] != '0' && q[8] != '1') || memcmp(q + 9, "\" 2", 3) != 0 ||
                !is_digit(q[12]) || !is_digit(q[13]) || q[14] != ' ' || !is_digit(q[15])) {
                p++;
                continue;
            }
            const unsigned char *e = q + 15;
            while (e < stop && is_digit(*e))
                e++;
            hits[nhits++] = (own_get){p, q + 15, e, i};
            found++;
            p = e;
        }
    }
    for (Py_ssize_t i = 1; i < nhits; i++) {  /* file order (a few dozen at most) */
        own_get h = hits[i];
        Py_ssize_t j = i;
        for (; j > 0 && hits[j - 1].at > h.at; j--)
            hits[j] = hits[j - 1];
        hits[j] = h;
    }
    for (Py_ssize_t i = 0; i < nhits; i++) {
        PyObject *path = PyList_GET_ITEM(paths, hits[i].path);
        Py_ssize_t ndigits = hits[i].digits_end - hits[i].digits;
        char *digits = PyMem_Malloc((size_t)ndigits + 1);
        if (digits == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(digits, hits[i].digits, (size_t)ndigits);
        digits[ndigits] = '\0';
        PyObject *size = PyLong_FromString(digits, NULL, 10);
        PyMem_Free(digits);
        PyObject *name = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path),
                                              "surrogateescape");
        PyObject *item = size && name ? PyTuple_Pack(2, name, size) : NULL;
        Py_XDECREF(size);
        Py_XDECREF(name);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    PyMem_Free(needle);
    PyMem_Free(hits);
    PyBuffer_Release(&buf);
    return out;
fail:
    PyMem_Free(needle);
    PyMem_Free(hits);
    Py_XDECREF(out);
    PyBuffer_Release(&buf);
    return NULL;
}

PyDoc_STRVAR(split_hostport_doc,
"split_hostport(text, default) -> (host, port) or None\n\n"
"`detect._split_hostport` for an ASCII str (None for any other, which the Python code takes):\n"
"`user@` dropped up to the last @, `[v6]:port`, `host:port` (one colon), `host`; the port when\n"
"1-5 ASCII digits, else `default`; the host lower-cased without trailing dots. A CONNECT's\n"
"target is parsed once per event, and in Python that cost more than counting the event.");

/* (host, port) of an ASCII str, as split_hostport's doc says; None for other text */
static PyObject *split_text(PyObject *text, PyObject *dflt)
{
    if (!PyUnicode_IS_ASCII(text))
        Py_RETURN_NONE;
    const char *s = (const char *)PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const char *at = memrchr(s, '@', (size_t)n);
    if (at != NULL) {
        n -= at + 1 - s;
        s = at + 1;
    }
    const char *host = s, *port = s;
    Py_ssize_t hlen = n, plen = 0;
    if (n > 0 && s[0] == '[') {
        const char *end = memchr(s, ']', (size_t)n);
        host = s + 1;
        if (end != NULL) {
            hlen = end - host;
            if (end + 1 < s + n && end[1] == ':') {
                port = end + 2;
                plen = s + n - port;
            }
        } else {
            hlen = n - 1;
        }
    } else {
        const char *colon = memchr(s, ':', (size_t)n);
        if (colon != NULL && memchr(colon + 1, ':', (size_t)(s + n - colon - 1)) == NULL) {
            hlen = colon - s;
            port = colon + 1;
            plen = s + n - port;
        }
    }
    PyObject *port_obj = dflt;
    long value = 0;
    int digits = plen > 0 && plen <= 5;
    for (Py_ssize_t i = 0; digits && i < plen; i++) {
        digits = is_digit((unsigned char)port[i]);
        value = value * 10 + (port[i] - '0');
    }
    while (hlen > 0 && host[hlen - 1] == '.')
        hlen--;
    PyObject *h = PyUnicode_New(hlen, 127);
    if (h == NULL)
        return NULL;
    char *out = (char *)PyUnicode_DATA(h);
    for (Py_ssize_t i = 0; i < hlen; i++) {
        char c = host[i];
        out[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
    }
    PyObject *result;
    if (digits) {
        PyObject *p = PyLong_FromLong(value);
        result = p == NULL ? NULL : PyTuple_Pack(2, h, p);
        Py_XDECREF(p);
    } else {
        result = PyTuple_Pack(2, h, port_obj);
    }
    Py_DECREF(h);
    return result;
}

static PyObject *split_hostport(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "split_hostport(text: str, default)");
        return NULL;
    }
    return split_text(args[0], args[1]);
}

static PyObject *s_smtp, *s_connect, *s_unknown, *s_failed, *s_refused, *s_dash, *s_body,
    *s_total, *s_guess, *s_key_body, *s_key_total, *s_key_guess;

/* web_outcome(status): NULL for None (a 2xx), else a borrowed interned str; -1 on error */
static int web_outcome(PyObject *status, PyObject **out)
{
    *out = s_unknown;
    if (status == Py_None)
        return 0;
    int over;
    long v = PyLong_AsLongAndOverflow(status, &over);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (over)
        *out = over > 0 ? s_refused : s_unknown;
    else if (v >= 200 && v < 300)
        *out = NULL;
    else if (v == 502 || v == 503 || v == 504)
        *out = s_failed;
    else if (v >= 400)
        *out = s_refused;
    return 0;
}

/* True when `_join_hostport(*split_hostport(target))` is the target itself, with the port
 * (or -1) in `port`: ASCII `host:port` or `host` with no `@` or `[`, a host without capitals
 * or a trailing dot, a port of 1-5 digits without a leading zero. */
static int dest_is_target(PyObject *target, long *port)
{
    if (!PyUnicode_IS_ASCII(target))
        return 0;
    const char *s = (const char *)PyUnicode_DATA(target);
    Py_ssize_t n = PyUnicode_GET_LENGTH(target), colon = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == ':') {
            if (colon >= 0)
                return 0;  /* a second colon: an IPv6 address */
            colon = i;
        } else if (c == '@' || c == '[' || (c >= 'A' && c <= 'Z')) {
            return 0;
        }
    }
    Py_ssize_t hlen = colon >= 0 ? colon : n;
    if (hlen > 0 && s[hlen - 1] == '.')
        return 0;
    *port = -1;
    if (colon < 0)
        return 1;
    Py_ssize_t plen = n - colon - 1;
    if (plen < 1 || plen > 5 || (plen > 1 && s[colon + 1] == '0'))
        return 0;
    long v = 0;
    for (Py_ssize_t i = colon + 1; i < n; i++) {
        if (!is_digit((unsigned char)s[i]))
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *port = v;
    return 1;
}

/* str(status) for an int status, the usual ones made once (detect.status_text's table) */
static PyObject *status_str(PyObject *status)
{
    static PyObject *texts[500];  /* 100-599 */
    int over;
    long v = PyLong_AsLongAndOverflow(status, &over);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    if (over || v < 100 || v > 599)
        return PyObject_Str(status);
    if (texts[v - 100] == NULL && (texts[v - 100] = PyObject_Str(status)) == NULL)
        return NULL;
    return Py_NewRef(texts[v - 100]);
}

PyDoc_STRVAR(connect_shape_doc,
"connect_shape(target, status, size, bytes_out, unit) -> ConnectShape or None\n\n"
"`detect.connect_shape` for an ASCII target (None for any other: the Python code takes it):\n"
"what a CONNECT in a web server's log says by itself. A spam run's log is little else.");

static PyObject *connect_shape(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[4]) ||
        (args[1] != Py_None && !PyLong_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError,
                        "connect_shape(target: str, status: int | None, size, bytes_out, unit: str)");
        return NULL;
    }
    PyObject *status = args[1], *size = args[2], *bytes_out = args[3], *unit = args[4];
    PyObject *split = NULL, *dest = NULL, *text = NULL, *nbytes = NULL, *result = NULL, *outcome;
    long port_value = -1;
    if (dest_is_target(args[0], &port_value)) {  /* (most targets: no copy, no parse) */
        dest = Py_NewRef(args[0]);
    } else {
        split = split_text(args[0], Py_None);
        if (split == NULL || split == Py_None)
            return split;
        PyObject *host = PyTuple_GET_ITEM(split, 0), *port = PyTuple_GET_ITEM(split, 1);
        if (port != Py_None) {
            port_value = PyLong_AsLong(port);  /* at most 5 digits */
            const char *fmt = PyUnicode_FindChar(host, ':', 0, PyUnicode_GET_LENGTH(host), 1)
                              >= 0 ? "[%U]:%S" : "%U:%S";
            dest = PyUnicode_FromFormat(fmt, host, port);
        } else {
            dest = Py_NewRef(host);
        }
    }
    int smtp = port_value == 25 || port_value == 465 || port_value == 587 || port_value == 2525;
    if (dest == NULL || web_outcome(status, &outcome) < 0)
        goto done;
    if (status == Py_None) {
        text = Py_NewRef(s_dash);
    } else {
        text = status_str(status);
        if (text == NULL)
            goto done;
    }
    if (bytes_out != Py_None) {
        nbytes = Py_NewRef(bytes_out);
    } else {
        int truth = size == Py_None ? 0 : PyObject_IsTrue(size);  /* `size or 0` */
        if (truth < 0)
            goto done;
        nbytes = truth ? Py_NewRef(size) : PyLong_FromLong(0);
        if (nbytes == NULL)
            goto done;
    }
    int is_body = PyUnicode_Compare(unit, s_body) == 0;
    if (PyErr_Occurred())
        goto done;
    int own_error = (outcome == s_refused || outcome == s_failed) && !is_body;
    PyObject *psize = Py_None, *pkey = Py_None, *key_made = NULL;
    int body_vote = 0;
    if (outcome == NULL) {
        int is_total = PyUnicode_Compare(unit, s_total) == 0;
        int is_guess = PyUnicode_Compare(unit, s_guess) == 0;
        if (PyErr_Occurred())
            goto done;
        psize = is_total ? bytes_out : size;
        pkey = is_body ? s_key_body : is_total ? s_key_total : is_guess ? s_key_guess : NULL;
        if (pkey == NULL) {
            pkey = key_made = PyUnicode_FromFormat("CONNECT %U", unit);
            if (pkey == NULL)
                goto done;
        }
        int truth = psize == Py_None ? 0 : PyObject_IsTrue(psize);
        if (truth < 0) {
            Py_XDECREF(key_made);
            goto done;
        }
        body_vote = is_guess && !truth;
    }
    result = PyTuple_Pack(10, smtp ? s_smtp : s_connect, dest, smtp ? Py_True : Py_False,
                          nbytes, outcome == NULL ? Py_None : outcome, text, psize, pkey,
                          body_vote ? Py_True : Py_False, own_error ? Py_True : Py_False);
    Py_XDECREF(key_made);
done:
    Py_XDECREF(dest);
    Py_XDECREF(text);
    Py_XDECREF(nbytes);
    Py_XDECREF(split);
    return result;
}

/* ---- a run of CONNECTs counted into their incidents ---------------------------------------
 * `ProxyDetector._connect_row` (the reference) for the rows that need nothing but counting into
 * the latest incident of their kind, inside `deferring()`: in Python each cost ~15k
 * instructions of calls and lookups, and a spam run's log is little else. */

static PyObject *s_first, *s_last, *s_pending;

/* A time as a double that compares and subtracts as Python does with it: a float, or an int
 * below 2**53 (an epoch second: exact as a double, so int and mixed arithmetic agree). */
static int as_time(PyObject *o, double *out)
{
    if (PyFloat_CheckExact(o)) {
        *out = PyFloat_AS_DOUBLE(o);
        return 1;
    }
    if (!PyLong_CheckExact(o))
        return 0;
    int over;
    long long v = PyLong_AsLongLongAndOverflow(o, &over);
    if (over || v > (1LL << 53) || v < -(1LL << 53) || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = (double)v;
    return 1;
}

typedef struct {
    PyObject *kind;  /* borrowed: connect_shape's interned kind */
    PyObject *inc;   /* the kind's latest incident, and its first, last and pending store */
    PyObject *first, *last, *pending;  /* first, last: None or as_time's */
    double first_v, last_v;
    PyObject *events;  /* its deferred events (ProxyDetector._count), NULL until a row joins */
    int full, dirty;   /* full: MAX_INCIDENTS_PER_KIND reached; dirty: first/last to store */
} run_kind;

/* the latest incident of `kind` into k: 1, or 0 when the row needs _connect_row (none yet,
 * or state of another shape), -1 on error */
static int run_kind_load(run_kind *k, PyObject *kind, PyObject *by_kind, Py_ssize_t max_inc)
{
    PyObject *items = PyDict_GetItemWithError(by_kind, kind);  /* borrowed */
    if (items == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyList_Check(items) || PyList_GET_SIZE(items) == 0)
        return 0;
    PyObject *inc = PyList_GET_ITEM(items, PyList_GET_SIZE(items) - 1);
    PyObject *first = PyObject_GetAttr(inc, s_first);
    PyObject *last = first ? PyObject_GetAttr(inc, s_last) : NULL;
    PyObject *pending = last ? PyObject_GetAttr(inc, s_pending) : NULL;
    if (pending == NULL) {
        Py_XDECREF(first);
        Py_XDECREF(last);
        return -1;
    }
    double v;
    if (!(first == Py_None || as_time(first, &v)) || !(last == Py_None || as_time(last, &v)) ||
        !PyDict_CheckExact(pending)) {
        Py_DECREF(first);
        Py_DECREF(last);
        Py_DECREF(pending);
        return 0;
    }
    *k = (run_kind){kind, Py_NewRef(inc), first, last, pending, 0.0, 0.0, NULL,
                    PyList_GET_SIZE(items) >= max_inc, 0};
    if (first != Py_None)
        as_time(first, &k->first_v);
    if (last != Py_None)
        as_time(last, &k->last_v);
    return 1;
}

/* first and last back into the incident (note_time's work), and k emptied; 0 or -1 */
static int run_kind_done(run_kind *k)
{
    int rc = 0;
    if (k->dirty && (PyObject_SetAttr(k->inc, s_first, k->first) < 0 ||
                     PyObject_SetAttr(k->inc, s_last, k->last) < 0))
        rc = -1;
    Py_CLEAR(k->inc);
    Py_CLEAR(k->first);
    Py_CLEAR(k->last);
    Py_CLEAR(k->pending);
    Py_CLEAR(k->events);
    return rc;
}

/* k's deferred event list, made as ProxyDetector._count makes it: deferred[id(inc)] =
 * (inc, []) at the incident's first event */
static PyObject *run_kind_events(run_kind *k, PyObject *deferred)
{
    if (k->events != NULL)
        return k->events;
    PyObject *key = PyLong_FromVoidPtr(k->inc);  /* id(inc) */
    if (key == NULL)
        return NULL;
    PyObject *held = PyDict_GetItemWithError(deferred, key);
    if (held != NULL) {
        if (!PyTuple_Check(held) || PyTuple_GET_SIZE(held) != 2 ||
            !PyList_Check(PyTuple_GET_ITEM(held, 1)))
            PyErr_SetString(PyExc_TypeError, "deferred events must be (incident, list)");
        else
            k->events = Py_NewRef(PyTuple_GET_ITEM(held, 1));
    } else if (!PyErr_Occurred()) {
        PyObject *list = PyList_New(0);
        PyObject *pair = list ? PyTuple_Pack(2, k->inc, list) : NULL;
        if (pair != NULL && PyDict_SetItem(deferred, key, pair) == 0)
            k->events = Py_NewRef(list);
        Py_XDECREF(list);
        Py_XDECREF(pair);
    }
    Py_DECREF(key);
    return k->events;
}

/* pending[(psize, pkey)]: [count, hosts] += (1, dest), as Incident.add_pending; 0 or -1 */
static int run_pend(PyObject *pending, PyObject *key, PyObject *entry, PyObject *dest)
{
    if (entry == NULL) {
        PyObject *hosts = PySet_New(NULL);
        PyObject *zero = hosts ? PyLong_FromLong(0) : NULL;
        entry = zero ? PyList_New(2) : NULL;
        if (entry == NULL) {
            Py_XDECREF(hosts);
            Py_XDECREF(zero);
            return -1;
        }
        PyList_SET_ITEM(entry, 0, zero);
        PyList_SET_ITEM(entry, 1, hosts);
        int rc = PyDict_SetItem(pending, key, entry);
        Py_DECREF(entry);  /* the store holds it */
        if (rc < 0)
            return -1;
    }
    PyObject *one = PyLong_FromLong(1);
    PyObject *count = one ? PyNumber_Add(PyList_GET_ITEM(entry, 0), one) : NULL;
    Py_XDECREF(one);
    if (count == NULL || PyList_SetItem(entry, 0, count) < 0)
        return -1;
    PyObject *hosts = PyList_GET_ITEM(entry, 1);
    return PySet_GET_SIZE(hosts) < 4 ? PySet_Add(hosts, dest) : 0;
}

PyDoc_STRVAR(connect_run_doc,
"connect_run(fields, cands, start, base, unit, path, by_kind, deferred, gap, max_incidents,\n"
"            probe_end) -> (stop, smallest own error page or None, body votes)\n\n"
"`ProxyDetector.feed_fields` of fields[start:] and cands[start:] (lines that did not parse\n"
"skipped) inside `deferring()`, while a line is a CONNECT that needs nothing but counting into\n"
"the latest incident of its kind (`_connect_row`'s work): it stops at the first that needs\n"
"more (another method, a vhost, a 304 of a guessed unit, the probe's line, a target that is\n"
"not ASCII, a time outside that incident, a full store of pending answers), which the caller\n"
"feeds itself after noting the own error page size and the body votes of the lines taken.");

static PyObject *connect_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 11 || !PyList_Check(args[0]) || !PyList_Check(args[1]) ||
        PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1]) || !PyUnicode_Check(args[4]) ||
        !PyUnicode_Check(args[5]) || !PyDict_Check(args[6]) || !PyDict_Check(args[7]) ||
        !PyUnicode_Check(args[10])) {
        PyErr_SetString(PyExc_TypeError, "connect_run(fields: list, cands: list (as long), "
                        "start, base, unit: str, path: str, by_kind: dict, deferred: dict, gap, "
                        "max_incidents, probe_end: str)");
        return NULL;
    }
    PyObject *fields = args[0], *cands = args[1], *unit = args[4], *path = args[5],
             *by_kind = args[6], *deferred = args[7], *probe = args[10];
    Py_ssize_t i = PyLong_AsSsize_t(args[2]), max_inc = PyLong_AsSsize_t(args[9]);
    double gap = PyFloat_AsDouble(args[8]);
    if (PyErr_Occurred())
        return NULL;
    int guess = PyUnicode_Compare(unit, s_guess) == 0;
    run_kind kinds[2];
    int nkinds = 0;
    PyObject *own_min = NULL, *zero = PyLong_FromLong(0), *result = NULL;
    Py_ssize_t body = 0;
    if (zero == NULL)
        return NULL;
    for (i = i < 0 ? 0 : i; i < PyList_GET_SIZE(fields); i++) {
        PyObject *f = PyList_GET_ITEM(fields, i), *cand = PyList_GET_ITEM(cands, i);
        if (f == Py_None)
            continue;  /* the line did not parse: no event */
        if (!PyTuple_Check(f) || PyTuple_GET_SIZE(f) < 10 || !PyTuple_Check(cand) ||
            PyTuple_GET_SIZE(cand) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(cand, 1)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(f, 2)) ||
            PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(f, 2), "CONNECT") != 0)
            break;  /* another method (or shape): `feed` */
        PyObject *t = PyTuple_GET_ITEM(f, 0), *target = PyTuple_GET_ITEM(f, 3),
                 *status = PyTuple_GET_ITEM(f, 4), *vhost = PyTuple_GET_ITEM(f, 6);
        double tv = 0.0;
        if ((vhost != Py_None && !(PyUnicode_Check(vhost) && PyUnicode_GET_LENGTH(vhost) == 0)) ||
            (t != Py_None && !as_time(t, &tv)) || !PyUnicode_Check(target) ||
            (status != Py_None && !PyLong_Check(status)))
            break;  /* a name to learn, or fields of another shape */
        if (guess && status != Py_None) {
            int over;
            long v = PyLong_AsLongAndOverflow(status, &over);
            if (v == -1 && PyErr_Occurred())
                goto done;
            if (!over && v == 304)
                break;  /* a size-unit vote */
        }
        /* what the row holds, released at row_end; stop: the row is the caller's */
        PyObject *line = NULL, *lineno = NULL, *shape = NULL, *key = NULL, *entry = NULL;
        int stop = 0, rc = 0;
        /* sources.line_text: the CR of a CRLF ending dropped, undecodable bytes escaped */
        PyObject *raw = PyTuple_GET_ITEM(cand, 1);
        Py_ssize_t rlen = PyBytes_GET_SIZE(raw);
        if (rlen > 0 && PyBytes_AS_STRING(raw)[rlen - 1] == '\r')
            rlen--;
        line = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), rlen, "surrogateescape");
        Py_ssize_t probe_line = line ? PyUnicode_Tailmatch(line, probe, 0, PY_SSIZE_T_MAX, 1) : -1;
        stop = probe_line > 0;  /* relayguard's own probe */
        rc = probe_line < 0 ? -1 : 0;
        if (rc == 0 && !stop) {
            lineno = PyNumber_Add(PyTuple_GET_ITEM(cand, 0), args[3]);  /* base + n */
            PyObject *sargs[5] = {target, status, PyTuple_GET_ITEM(f, 5), PyTuple_GET_ITEM(f, 9),
                                  unit};
            shape = lineno ? connect_shape(NULL, sargs, 5) : NULL;
            rc = shape == NULL ? -1 : 0;
            stop = shape == Py_None;  /* not ASCII */
        }
        if (rc < 0 || stop)
            goto row_end;
        PyObject *kind = PyTuple_GET_ITEM(shape, 0), *dest = PyTuple_GET_ITEM(shape, 1),
                 *pkey = PyTuple_GET_ITEM(shape, 7);
        run_kind *k = NULL;
        for (int j = 0; j < nkinds; j++)
            if (kinds[j].kind == kind)
                k = &kinds[j];
        if (k == NULL) {
            int got = nkinds < 2 ? run_kind_load(&kinds[nkinds], kind, by_kind, max_inc) : 0;
            rc = got < 0 ? -1 : 0;
            stop = got == 0;
            if (got > 0)
                k = &kinds[nkinds++];
        }
        /* IncidentBook.current's answer is the latest incident: no time, none there yet, no
         * room for another, or a time within GAP of it */
        if (k != NULL && t != Py_None && k->last != Py_None && !k->full)
            stop = !(tv - k->last_v <= gap && (k->first == Py_None || tv >= k->first_v - gap));
        if (rc == 0 && !stop && pkey != Py_None) {
            key = PyTuple_Pack(2, PyTuple_GET_ITEM(shape, 6), pkey);
            entry = key ? PyDict_GetItemWithError(k->pending, key) : NULL;
            if (key == NULL || (entry == NULL && PyErr_Occurred()))
                rc = -1;
            else if (entry == NULL)
                stop = PyDict_GET_SIZE(k->pending) >= 256;  /* full: settled in Python */
            else
                stop = !PyList_Check(entry) || PyList_GET_SIZE(entry) != 2 ||
                       !PyAnySet_Check(PyList_GET_ITEM(entry, 1));
        }
        if (rc < 0 || stop)
            goto row_end;
        /* the row joins k's incident: note_time, then the event, as _count defers it */
        if (t != Py_None && (k->first == Py_None || tv < k->first_v)) {
            Py_SETREF(k->first, Py_NewRef(t));
            k->first_v = tv;
            k->dirty = 1;
        }
        if (t != Py_None && (k->last == Py_None || tv > k->last_v)) {
            Py_SETREF(k->last, Py_NewRef(t));
            k->last_v = tv;
            k->dirty = 1;
        }
        PyObject *events = run_kind_events(k, deferred);
        PyObject *sample = events ? PyTuple_Pack(3, path, lineno, line) : NULL;
        PyObject *ev = sample ? PyTuple_Pack(8, t, PyTuple_GET_ITEM(f, 1), dest, sample,
                                             PyTuple_GET_ITEM(shape, 4), PyTuple_GET_ITEM(shape, 5),
                                             PyTuple_GET_ITEM(shape, 3), PyTuple_GET_ITEM(shape, 2))
                              : NULL;
        Py_XDECREF(sample);
        rc = ev == NULL ? -1 : PyList_Append(events, ev);
        Py_XDECREF(ev);
        if (rc == 0 && PyTuple_GET_ITEM(shape, 9) == Py_True) {  /* LocalPages.note_own */
            PyObject *nbytes = PyTuple_GET_ITEM(shape, 3);
            int keep = PyObject_RichCompareBool(nbytes, zero, Py_GT);
            if (keep > 0 && own_min != NULL)
                keep = PyObject_RichCompareBool(nbytes, own_min, Py_LT);
            if (keep > 0)
                Py_XSETREF(own_min, Py_NewRef(nbytes));
            rc = keep < 0 ? -1 : 0;
        }
        if (rc == 0 && pkey != Py_None) {
            body += PyTuple_GET_ITEM(shape, 8) == Py_True;
            rc = run_pend(k->pending, key, entry, dest);
        }
    row_end:
        Py_XDECREF(key);
        Py_XDECREF(shape);
        Py_XDECREF(lineno);
        Py_XDECREF(line);
        if (rc < 0)
            goto done;
        if (stop)
            break;
    }
    result = Py_BuildValue("(nOn)", i, own_min ? own_min : Py_None, body);
done:
    for (int j = 0; j < nkinds; j++) {  /* what was counted is stored, error or not */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (run_kind_done(&kinds[j]) < 0 && type == NULL)
            Py_CLEAR(result);
        else if (type != NULL)
            PyErr_Restore(type, value, tb);
    }
    Py_XDECREF(own_min);
    Py_DECREF(zero);
    return result;
}

/* ---- the top-k table's hot loop ----------------------------------------------------------
 * `counting.TopK.add_counts` with every n = 1, over the same Python objects (the Python code is
 * the reference and runs where this is not built): each proxy event adds its client and its
 * destination, in a spam run nearly always new ones, each of which evicts a victim. */

/* the end of `low` that is at or below the floor in `counts` (popped), or NULL: a new
 * reference; -1 on error */
static int pop_victim(PyObject *counts, PyObject *low, PyObject *floor, PyObject **victim)
{
    *victim = NULL;
    while (PyList_GET_SIZE(low) > 0) {
        Py_ssize_t last = PyList_GET_SIZE(low) - 1;
        PyObject *key = Py_NewRef(PyList_GET_ITEM(low, last));
        if (PyList_SetSlice(low, last, last + 1, NULL) < 0) {
            Py_DECREF(key);
            return -1;
        }
        PyObject *c = PyDict_GetItemWithError(counts, key);
        int le = c == NULL ? 0 : PyObject_RichCompareBool(c, floor, Py_LE);
        if (le < 0 || (c == NULL && PyErr_Occurred())) {
            Py_DECREF(key);
            return -1;
        }
        if (le) {
            *victim = key;
            return 0;
        }
        Py_DECREF(key);
    }
    return 0;
}

PyDoc_STRVAR(topk_add_many_doc,
"topk_add_many(topk, keys) -> None\n\n"
"`topk.add(key)` for each key of the list, in order, as counting.TopK does it.");

static PyObject *topk_add_many(PyObject *self, PyObject *args)
{
    PyObject *topk, *keys;
    if (!PyArg_ParseTuple(args, "OO!", &topk, &PyList_Type, &keys))
        return NULL;
    PyObject *counts = PyObject_GetAttrString(topk, "counts");
    PyObject *kobj = counts ? PyObject_GetAttrString(topk, "k") : NULL;
    PyObject *floor = NULL, *low = NULL, *one = PyLong_FromLong(1), *result = NULL;
    int evicted = 0, touched = 0;  /* touched: the floor and the list are written back */
    if (kobj == NULL || one == NULL)
        goto done;
    if (!PyDict_Check(counts)) {
        PyErr_SetString(PyExc_TypeError, "TopK.counts is not a dict");
        goto done;
    }
    Py_ssize_t k = PyLong_AsSsize_t(kobj);
    if (k == -1 && PyErr_Occurred())
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        Py_INCREF(key);
        PyObject *c = PyDict_GetItemWithError(counts, key), *sum = NULL;
        int rc = -1;
        if (c != NULL) {
            sum = PyNumber_Add(c, one);
            rc = sum == NULL ? -1 : PyDict_SetItem(counts, key, sum);
        } else if (PyErr_Occurred()) {
            rc = -1;
        } else if (PyDict_GET_SIZE(counts) < k) {
            rc = PyDict_SetItem(counts, key, one);
        } else {
            if (floor == NULL) {  /* as `_victim` reads them (both, or neither: old state) */
                floor = PyObject_GetAttrString(topk, "floor");
                low = floor ? PyObject_GetAttrString(topk, "low") : NULL;
                if (low == NULL || !PyList_Check(low)) {
                    if (low == NULL && !PyErr_ExceptionMatches(PyExc_AttributeError)) {
                        Py_DECREF(key);
                        goto done;
                    }
                    PyErr_Clear();
                    Py_XSETREF(floor, PyLong_FromLong(0));
                    Py_XSETREF(low, PyList_New(0));
                    if (floor == NULL || low == NULL) {
                        Py_DECREF(key);
                        goto done;
                    }
                }
            }
            touched = 1;
            PyObject *victim;
            rc = pop_victim(counts, low, floor, &victim);
            if (rc == 0 && victim == NULL) {  /* none left at the floor: raise it */
                PyObject *dk, *dv, *least = NULL;
                Py_ssize_t pos = 0;
                while (rc == 0 && PyDict_Next(counts, &pos, &dk, &dv)) {
                    int lt = least == NULL ? 1 : PyObject_RichCompareBool(dv, least, Py_LT);
                    if (lt < 0)
                        rc = -1;
                    else if (lt)
                        least = dv;
                }
                PyObject *fresh = rc == 0 ? PyList_New(0) : NULL;
                if (fresh == NULL)
                    rc = -1;
                if (rc == 0 && least == NULL) {
                    PyErr_SetString(PyExc_ValueError, "min() arg is an empty sequence");
                    rc = -1;
                }
                if (rc == 0) {
                    Py_SETREF(floor, Py_NewRef(least));
                    pos = 0;
                    while (rc == 0 && PyDict_Next(counts, &pos, &dk, &dv)) {
                        int eq = PyObject_RichCompareBool(dv, floor, Py_EQ);
                        if (eq < 0 || (eq && PyList_Append(fresh, dk) < 0))
                            rc = -1;
                    }
                }
                if (rc == 0 && PyList_Reverse(fresh) < 0)
                    rc = -1;
                if (rc == 0) {
                    Py_SETREF(low, fresh);
                    rc = pop_victim(counts, low, floor, &victim);
                    if (rc == 0 && victim == NULL) {
                        PyErr_SetString(PyExc_IndexError, "pop from empty list");
                        rc = -1;
                    }
                } else {
                    Py_XDECREF(fresh);
                }
            }
            if (rc == 0) {
                PyObject *was = PyDict_GetItemWithError(counts, victim);  /* counts.pop() */
                if (was == NULL) {
                    if (!PyErr_Occurred())
                        PyErr_SetObject(PyExc_KeyError, victim);
                    rc = -1;
                } else {
                    Py_INCREF(was);
                    rc = PyDict_DelItem(counts, victim);
                    sum = rc == 0 ? PyNumber_Add(was, one) : NULL;
                    Py_DECREF(was);
                    rc = sum == NULL ? -1 : PyDict_SetItem(counts, key, sum);
                }
            }
            Py_XDECREF(victim);
            if (rc == 0) {
                evicted = 1;
                int le = PyObject_RichCompareBool(sum, floor, Py_LE);
                if (le < 0 || (le && PyList_SetSlice(low, 0, PyList_GET_SIZE(low), NULL) < 0))
                    rc = -1;
            }
        }
        Py_XDECREF(sum);
        Py_DECREF(key);
        if (rc < 0)
            goto done;
    }
    if (touched && (PyObject_SetAttrString(topk, "floor", floor) < 0 ||
                    PyObject_SetAttrString(topk, "low", low) < 0))
        goto done;
    if (evicted && PyObject_SetAttrString(topk, "approximate", Py_True) < 0)
        goto done;
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(counts);
    Py_XDECREF(kobj);
    Py_XDECREF(floor);
    Py_XDECREF(low);
    Py_XDECREF(one);
    return result;
}

/* ---- parsing candidate lines of the stock formats ------------------------------------------
 * The regexes fastpath.py would otherwise run per candidate line (formats.py compiles them):
 *   common   (?P<client>\S+) (?:\S*) (?:\S*) \[(?P<time>[^\]]+)\] "(?P<request>.*?)"
 *            (?P<status>\d{3}|-) (?P<size>\d+|-)\s*$
 *   combined the same, then ` "Q" "Q"\s*$` with Q = [^"\\]*(?:\\.[^"\\]*)*, and when that fails
 *            the prefix (cut lines): the same up to the size, then (?:\s|$)
 *   nginx    combined with a literal `-` for the second field
 *   vhost_combined  (?P<vhost>[^\s:]+):(?:\S*)  then combined, the number being %O
 * matched with Python's meaning (str patterns) on ASCII lines, where \s is exactly these ten
 * characters and \d is 0-9; a line with any other byte goes to the caller's fallback, the
 * regex itself. Every step is deterministic but the lazy request, which is tried at each `"`
 * in order, as the regex engine does. */
enum { KIND_COMMON = 0, KIND_COMBINED = 1, KIND_NGINX = 2, KIND_VHOST = 3 };

static inline int is_ws(unsigned char c)
{
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 28 && c <= 31);
}

typedef struct { Py_ssize_t a, b; } span;
typedef struct { span vhost, client, time, request, status, size; } groups;

/* `Q"` from i: the position after the closing quote, or -1 */
static Py_ssize_t quoted_end(const unsigned char *s, Py_ssize_t n, Py_ssize_t i)
{
    while (i < n) {
        if (s[i] == '"')
            return i + 1;
        if (s[i] == '\\') {
            if (i + 1 >= n || s[i + 1] == '\n')
                return -1;  /* `\\.` cannot match: Q stops before it, and no `"` follows */
            i += 2;
        } else {
            i++;
        }
    }
    return -1;
}

/* status, space, size from i (just after `" `); with `g` filled, the position after the size,
 * or -1 */
static Py_ssize_t status_size(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, groups *g)
{
    if (i + 3 <= n && is_digit(s[i]) && is_digit(s[i + 1]) && is_digit(s[i + 2]) &&
            i + 3 < n && s[i + 3] == ' ') {
        g->status = (span){i, i + 3};
        i += 4;
    } else if (i + 1 < n && s[i] == '-' && s[i + 1] == ' ') {
        g->status = (span){i, i + 1};
        i += 2;
    } else {
        return -1;
    }
    Py_ssize_t j = i;
    while (j < n && is_digit(s[j]))
        j++;
    if (j == i) {
        if (i < n && s[i] == '-')
            j = i + 1;
        else
            return -1;
    }
    g->size = (span){i, j};
    return j;
}

/* 1 when the whole line matches (prefix = 0) or its start matches the prefix pattern */
static int match_stock(const unsigned char *s, Py_ssize_t n, int kind, int prefix, groups *g)
{
    Py_ssize_t i = 0;
    if (kind == KIND_VHOST) {  /* `vhost:port ` */
        while (i < n && !is_ws(s[i]) && s[i] != ':')
            i++;
        if (i == 0 || i >= n || s[i] != ':')
            return 0;
        g->vhost = (span){0, i};
        i++;
        while (i < n && !is_ws(s[i]))
            i++;
        if (i >= n || s[i] != ' ')
            return 0;
        i++;
    }
    Py_ssize_t c0 = i;
    while (i < n && !is_ws(s[i]))
        i++;
    if (i == c0 || i >= n || s[i] != ' ')
        return 0;
    g->client = (span){c0, i};
    i++;
    if (kind == KIND_NGINX) {
        if (i + 1 >= n || s[i] != '-' || s[i + 1] != ' ')
            return 0;
        i += 2;
    } else {
        while (i < n && !is_ws(s[i]))
            i++;
        if (i >= n || s[i] != ' ')
            return 0;
        i++;
    }
    while (i < n && !is_ws(s[i]))
        i++;
    if (i + 1 >= n || s[i] != ' ' || s[i + 1] != '[')
        return 0;
    i += 2;
    Py_ssize_t t0 = i;
    while (i < n && s[i] != ']')
        i++;
    if (i == t0 || i + 2 >= n || s[i + 1] != ' ' || s[i + 2] != '"')
        return 0;
    g->time = (span){t0, i};
    Py_ssize_t r0 = i + 3;
    for (Py_ssize_t p = r0; p < n; p++) {  /* the lazy request: each `"` in turn */
        if (s[p] == '\n')
            return 0;  /* `.` stops at a newline */
        if (s[p] != '"' || p + 1 >= n || s[p + 1] != ' ')
            continue;
        Py_ssize_t j = status_size(s, n, p + 2, g);
        if (j < 0)
            continue;
        if (prefix) {
            if (j < n && !is_ws(s[j]))
                continue;
        } else if (kind != KIND_COMMON) {
            if (j + 1 >= n || s[j] != ' ' || s[j + 1] != '"')
                continue;
            j = quoted_end(s, n, j + 2);
            if (j < 0 || j + 1 >= n || s[j] != ' ' || s[j + 1] != '"')
                continue;
            j = quoted_end(s, n, j + 2);
            if (j < 0)
                continue;
        }
        if (!prefix) {
            while (j < n && is_ws(s[j]))
                j++;
            if (j != n)
                continue;
        }
        g->request = (span){r0, p};
        return 1;
    }
    return 0;
}

static PyObject *text(const unsigned char *s, span x)
{
    return PyUnicode_DecodeASCII((const char *)s + x.a, x.b - x.a, NULL);
}

/* int of a digit span, None for `-` */
static PyObject *number(const unsigned char *s, span x)
{
    if (x.b - x.a == 1 && s[x.a] == '-')
        Py_RETURN_NONE;
    if (x.b - x.a <= 18) {
        long long v = 0;
        for (Py_ssize_t k = x.a; k < x.b; k++)
            v = v * 10 + (s[k] - '0');
        return PyLong_FromLongLong(v);
    }
    PyObject *str = text(s, x);  /* a longer number: Python's own big int */
    if (str == NULL)
        return NULL;
    PyObject *v = PyLong_FromUnicodeObject(str, 10);
    Py_DECREF(str);
    return v;
}

static const char MONTH_NAMES[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

static long long days_from_civil(long long y, int m, int d)  /* days since 1970-01-01 */
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static inline int two(const unsigned char *p) { return (p[0] - '0') * 10 + (p[1] - '0'); }

/* formats.parse_clf_time of `dd/Mon/yyyy:HH:MM:SS +hhmm` written exactly so: 1 with the
 * epoch in `out`, 0 for a date it rejects (day 31 of February, hour 24…); -1 for any other
 * shape, which the caller hands to parse_clf_time itself */
static int clf_epoch(const unsigned char *p, Py_ssize_t len, long long *out)
{
    /* the time field is followed by its `]`, so the scanner's own shape check applies */
    unsigned char key[KEY_LEN];
    if (len != 26 || !stamp_at(p, p + 27, key))
        return -1;
    int month = 0;
    for (int k = 0; k < 12; k++) {
        if (memcmp(p + 3, MONTH_NAMES + 3 * k, 3) == 0) {
            month = k + 1;
            break;
        }
    }
    int day = two(p), year = two(p + 7) * 100 + two(p + 9), hour = two(p + 12);
    int minute = two(p + 15);
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month == 0 || year < 1 || day < 1 || hour > 23 || minute > 59)
        return 0;
    int leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    if (day > dim[month - 1] + (month == 2 && leap))
        return 0;
    long long offset = (two(p + 22) * 60LL + two(p + 24)) * 60;
    if (p[21] == '-')
        offset = -offset;
    *out = days_from_civil(year, month, day) * 86400 + hour * 3600LL + minute * 60LL - offset +
           two(p + 18);
    return 1;
}

/* The record fields `AccessFormat.parse_fields` gives, or None */
static PyObject *fields(const unsigned char *s, const groups *g, int kind, PyObject *clf_time)
{
    long long epoch;
    int known = clf_epoch(s + g->time.a, g->time.b - g->time.a, &epoch);
    PyObject *t;
    if (known == 1) {
        t = PyLong_FromLongLong(epoch);
    } else if (known == 0) {
        t = Py_NewRef(Py_None);
    } else {
        PyObject *stamp = text(s, g->time);
        if (stamp == NULL)
            return NULL;
        t = PyObject_CallOneArg(clf_time, stamp);
        Py_DECREF(stamp);
    }
    if (t == NULL)
        return NULL;
    if (t == Py_None)
        return t;
    /* request.split(" ", 2): the method, and the target after it */
    span method = g->request, target = {g->request.b, g->request.b};
    for (Py_ssize_t k = g->request.a; k < g->request.b; k++) {
        if (s[k] == ' ') {
            method.b = k;
            Py_ssize_t e = k + 1;
            while (e < g->request.b && s[e] != ' ')
                e++;
            target = (span){k + 1, e};
            break;
        }
    }
    /* AccessRecord's order: time, client, method, target, status, size, vhost, Host header,
     * bytes in, bytes out, duration; vhost_combined's number is %O (bytes out), not a size */
    int vh = kind == KIND_VHOST;
    PyObject *items[11] = {t, text(s, g->client), text(s, method), text(s, target),
                           number(s, g->status), vh ? Py_NewRef(Py_None) : number(s, g->size),
                           vh ? text(s, g->vhost) : Py_NewRef(Py_None), Py_NewRef(Py_None),
                           Py_NewRef(Py_None), vh ? number(s, g->size) : Py_NewRef(Py_None),
                           Py_NewRef(Py_None)};
    PyObject *out = NULL;
    for (int k = 1; k < 11; k++)
        if (items[k] == NULL)
            goto done;
    out = PyTuple_New(11);
    if (out == NULL)
        goto done;
    for (int k = 0; k < 11; k++) {
        PyTuple_SET_ITEM(out, k, items[k]);
        items[k] = NULL;
    }
done:
    for (int k = 0; k < 11; k++)
        Py_XDECREF(items[k]);
    return out;
}

PyDoc_STRVAR(parse_stock_doc,
"parse_stock(candidates, kind, clf_time, fallback) -> list\n\n"
"AccessFormat.parse_fields for each (line number, bytes) candidate of a stock format (kind 0\n"
"common, 1 combined, 2 nginx combined, 3 vhost_combined): its fields tuple, or None. clf_time turns the time\n"
"field into epoch seconds (None: no record); fallback(bytes) parses a non-ASCII line.");

static PyObject *parse_stock(PyObject *self, PyObject *args)
{
    PyObject *cands, *clf_time, *fallback;
    int kind;
    if (!PyArg_ParseTuple(args, "O!iOO", &PyList_Type, &cands, &kind, &clf_time, &fallback))
        return NULL;
    if (kind < KIND_COMMON || kind > KIND_VHOST) {
        PyErr_SetString(PyExc_ValueError, "kind must be 0, 1, 2 or 3");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(cands);
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *item = PyList_GET_ITEM(cands, k);
        PyObject *raw;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 ||
                !PyBytes_Check(raw = PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "candidates must be (int, bytes) tuples");
            Py_DECREF(out);
            return NULL;
        }
        const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(raw);
        Py_ssize_t n = PyBytes_GET_SIZE(raw);
        int ascii = 1;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (s[i] & 0x80) {
                ascii = 0;
                break;
            }
        }
        PyObject *got;
        groups g;
        if (!ascii)
            got = PyObject_CallOneArg(fallback, raw);
        else if (match_stock(s, n, kind, 0, &g) ||
                 (kind != KIND_COMMON && match_stock(s, n, kind, 1, &g)))
            got = fields(s, &g, kind, clf_time);
        else
            got = Py_NewRef(Py_None);
        if (got == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, k, got);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"sizes_304", sizes_304, METH_VARARGS, sizes_304_doc},
    {"own_gets", own_gets, METH_VARARGS, own_gets_doc},
    {"topk_add_many", topk_add_many, METH_VARARGS, topk_add_many_doc},
    {"split_hostport", (PyCFunction)(void (*)(void))split_hostport, METH_FASTCALL,
     split_hostport_doc},
    {"connect_shape", (PyCFunction)(void (*)(void))connect_shape, METH_FASTCALL,
     connect_shape_doc},
    {"connect_run", (PyCFunction)(void (*)(void))connect_run, METH_FASTCALL, connect_run_doc},
    {"parse_stock", parse_stock, METH_VARARGS, parse_stock_doc},
    {"scan", scan, METH_VARARGS, scan_doc},
    {"newlines", newlines, METH_O, newlines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "relayguard._fastscan",
    "One-pass access-log chunk scanner for the fast path (optional; see fastpath.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__fastscan(void)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_smtp, "proxy-smtp"}, {&s_connect, "proxy-connect"}, {&s_unknown, "unknown"},
        {&s_failed, "failed"}, {&s_refused, "refused"}, {&s_dash, "-"}, {&s_body, "body"},
        {&s_total, "total"}, {&s_guess, "guess"}, {&s_key_body, "CONNECT body"},
        {&s_key_total, "CONNECT total"}, {&s_key_guess, "CONNECT guess"},
        {&s_first, "first"}, {&s_last, "last"}, {&s_pending, "pending"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL &&
            (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
