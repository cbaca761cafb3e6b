/* The yscv flavor of LARS, written from docs/specification.md in C99 with no dependency, as a
 * consumer of `lars vectors`: it reads one test vector (JSON), runs its steps in double
 * precision and writes the results file that `lars vectors check` grades.
 *
 *     cc -std=c99 -O2 -o lars_yscv lars_yscv.c -lm
 *     ./lars_yscv yscv.nesterov.float64.json results/yscv.nesterov.float64.json
 *
 * The rule, per tensor with weights w, gradient g, weight decay wd and buffer v (zero at first):
 *   g <- sign * rescale * g                (maximize, grad_rescale); the norms see this g,
 *   g <- clip(g, -c, c)                    the update the clipped one (grad_clip_value c)
 *   r  = eta * |w| / (|g| + wd * |w| + eps)  if |w| > 0 and |g| > 0, else 1; 1 if not adapted
 *   r  = min(r / lr, 1)                    with the LARC clip, where the ratio did not fall back
 *   u  = g + wd * w
 *   v  = m * v + (1 - d) * (lr * r) * u    (heavy-ball; without momentum, no buffer: v = lr*r*u)
 *   w  = w - v, or w - ((lr * r) * u + m * v) with nesterov
 * Any other choice of the rule's axes is refused: this program implements yscv, not every flavor.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A JSON value: the minimum a test vector needs. */
enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
typedef struct J {
    int type, len;
    double num;
    char *str;
    char **keys;
    struct J **items;
} J;

static const char *src;

static void fail(const char *what, const char *detail) {
    fprintf(stderr, "lars_yscv: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(2);
}

static void *grow(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) fail("out of memory", NULL);
    return p;
}

static void skip(void) { while (isspace((unsigned char)*src)) src++; }

static J *value(void);

static char *string(void) {
    size_t n = 0;
    char *s = NULL;
    if (*src++ != '"') fail("a JSON string expected", NULL);
    while (*src != '"') {
        char c = *src++;
        if (!c) fail("unterminated JSON string", NULL);
        if (c == '\\') {
            c = *src++;
            if (c == 'n') c = '\n'; else if (c == 't') c = '\t'; else if (c == 'r') c = '\r';
            else if (c == 'b') c = '\b'; else if (c == 'f') c = '\f';
            else if (c == 'u') { src += 4; c = '?'; }  /* names here are ASCII */
        }
        s = grow(s, n + 2);
        s[n++] = c;
    }
    src++;
    s = grow(s, n + 1);
    s[n] = 0;
    return s;
}

static J *node(int type) {
    J *j = calloc(1, sizeof *j);
    if (!j) fail("out of memory", NULL);
    j->type = type;
    return j;
}

static J *compound(char close, int type) {
    J *j = node(type);
    src++;
    skip();
    if (*src == close) { src++; return j; }
    for (;;) {
        j->items = grow(j->items, (size_t)(j->len + 1) * sizeof *j->items);
        if (type == J_OBJ) {
            skip();
            j->keys = grow(j->keys, (size_t)(j->len + 1) * sizeof *j->keys);
            j->keys[j->len] = string();
            skip();
            if (*src++ != ':') fail("':' expected in a JSON object", NULL);
        }
        j->items[j->len++] = value();
        skip();
        if (*src == ',') { src++; continue; }
        if (*src++ != close) fail("',' or a closing bracket expected", NULL);
        return j;
    }
}

static J *value(void) {
    skip();
    if (*src == '{') return compound('}', J_OBJ);
    if (*src == '[') return compound(']', J_ARR);
    if (*src == '"') { J *j = node(J_STR); j->str = string(); return j; }
    if (!strncmp(src, "null", 4)) { src += 4; return node(J_NULL); }
    if (!strncmp(src, "true", 4)) { J *j = node(J_BOOL); j->num = 1; src += 4; return j; }
    if (!strncmp(src, "false", 5)) { src += 5; return node(J_BOOL); }
    char *end;
    J *j = node(J_NUM);
    j->num = strtod(src, &end);
    if (end == src) fail("unexpected JSON text", NULL);
    src = end;
    return j;
}

static J *get(const J *o, const char *key) {
    for (int i = 0; o && o->type == J_OBJ && i < o->len; i++)
        if (!strcmp(o->keys[i], key)) return o->items[i];
    fail("missing field", key);
    return NULL;
}

static double num(const J *j, const char *what) {
    if (j->type != J_NUM && j->type != J_BOOL) fail("a number expected", what);
    return j->num;
}

/* A hyperparameter that must hold yscv's value, or the vector is not yscv's. */
static void require(const J *hp, const char *field, const char *expected) {
    const J *j = get(hp, field);
    int ok = j->type == J_STR ? !strcmp(j->str, expected)
           : j->type == J_BOOL ? (int)j->num == !strcmp(expected, "true")
           : j->type == J_NULL && !strcmp(expected, "null");
    if (!ok) fail("not the yscv rule: this field is not yscv's", field);
}

static double norm(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s);
}

static void write_arrays(FILE *f, const char *label, char **names, double **arrays, const int *sizes,
                         int count) {
    fprintf(f, "\"%s\": {", label);
    for (int k = 0; k < count; k++) {
        fprintf(f, "%s\"%s\": [", k ? ", " : "", names[k]);
        for (int i = 0; i < sizes[k]; i++) fprintf(f, "%s%.17g", i ? ", " : "", arrays[k][i]);
        fputc(']', f);
    }
    fputc('}', f);
}

int main(int argc, char **argv) {
    if (argc != 3) fail("usage: lars_yscv VECTOR.json RESULTS.json", NULL);
    FILE *in = fopen(argv[1], "rb");
    if (!in) fail("cannot read", argv[1]);
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    rewind(in);
    char *buffer = grow(NULL, (size_t)size + 1);
    if (fread(buffer, 1, (size_t)size, in) != (size_t)size) fail("cannot read", argv[1]);
    buffer[size] = 0;
    fclose(in);
    src = buffer;
    J *vec = value();

    J *hp = get(vec, "hyperparams");
    require(hp, "trust_denominator", "split");
    require(hp, "momentum_style", "heavy_ball");
    require(hp, "buffer_start", "zero");
    require(hp, "zero_norm_rule", "weight_and_grad");
    require(hp, "weight_decay_on_fallback", "true");
    require(hp, "larc_clip_on_fallback", "false");
    require(hp, "clip_before_norms", "false");
    require(hp, "momentum_correction", "false");
    require(hp, "grad_clip_norm", "null");
    double m = num(get(hp, "momentum"), "momentum"), d = num(get(hp, "dampening"), "dampening");
    double eta = num(get(hp, "trust_coefficient"), "trust_coefficient"), eps = num(get(hp, "eps"), "eps");
    double scale = num(get(hp, "grad_rescale"), "grad_rescale") * (num(get(hp, "maximize"), "maximize") ? -1 : 1);
    int nesterov = (int)num(get(hp, "nesterov"), "nesterov"), larc = (int)num(get(hp, "larc_clip"), "larc_clip");
    J *clip_value = get(hp, "grad_clip_value");
    double c = clip_value->type == J_NULL ? INFINITY : num(clip_value, "grad_clip_value");

    J *tensors = get(vec, "tensors"), *initial = get(vec, "initial_weights"), *steps = get(vec, "steps");
    int count = tensors->len;
    char **names = grow(NULL, (size_t)count * sizeof *names);
    double **w = grow(NULL, (size_t)count * sizeof *w), **v = grow(NULL, (size_t)count * sizeof *v);
    double *ratio = grow(NULL, (size_t)count * sizeof *ratio);
    int *sizes = grow(NULL, (size_t)count * sizeof *sizes);
    for (int k = 0; k < count; k++) {
        names[k] = get(tensors->items[k], "name")->str;
        J *start = get(initial, names[k]);
        sizes[k] = start->len;
        w[k] = grow(NULL, (size_t)sizes[k] * sizeof **w);
        v[k] = calloc((size_t)sizes[k] + 1, sizeof **v);
        for (int i = 0; i < sizes[k]; i++) w[k][i] = num(start->items[i], names[k]);
    }

    FILE *out = fopen(argv[2], "wb");
    if (!out) fail("cannot write", argv[2]);
    fprintf(out, "{\"format\": \"lars-test-results\", \"version\": 1, \"steps\": [");
    for (int t = 0; t < steps->len; t++) {
        J *s = steps->items[t];
        double lr = num(get(s, "lr"), "lr");
        for (int k = 0; k < count; k++) {
            J *grad = get(get(s, "grads"), names[k]);
            int n = sizes[k], adapt = (int)num(get(tensors->items[k], "adapt"), "adapt");
            double wd = num(get(tensors->items[k], "weight_decay"), "weight_decay");
            double *g = grow(NULL, (size_t)n * sizeof *g + 1);
            for (int i = 0; i < n; i++) g[i] = scale * num(grad->items[i], names[k]);
            double wn = norm(w[k], n), gn = norm(g, n), r = 1;
            if (adapt && wn > 0 && gn > 0) {
                r = eta * wn / (gn + wd * wn + eps);
                if (larc) r = lr <= 0 ? 1 : fmin(r / lr, 1);
            }
            double step = lr * r;
            for (int i = 0; i < n; i++) {
                double gi = fmax(-c, fmin(c, g[i]));
                double inc = step * (wd == 0 ? gi : gi + wd * w[k][i]);
                if (m == 0) { w[k][i] -= inc; continue; }
                v[k][i] = (t == 0 ? 0 : m * v[k][i]) + (1 - d) * inc;
                w[k][i] -= nesterov ? inc + m * v[k][i] : v[k][i];
            }
            ratio[k] = r;
            free(g);
        }
        fprintf(out, "%s{", t ? ", " : "");
        write_arrays(out, "weights", names, w, sizes, count);
        if (m != 0) {
            fputs(", ", out);
            write_arrays(out, "buffers", names, v, sizes, count);
        }
        fputs(", \"trust_ratios\": {", out);
        for (int k = 0; k < count; k++) fprintf(out, "%s\"%s\": %.17g", k ? ", " : "", names[k], ratio[k]);
        fputs("}}", out);
    }
    fputs("]}\n", out);
    if (fclose(out)) fail("cannot write", argv[2]);
    return 0;
}
