/* Reports of `ag bench` for machines and people (tools/bench.h): the CSV and JSON files and
 * the PNG chart, drawn by gnuplot. Every file is written under a temporary name in its
 * directory and renamed when complete, so a reader never sees half of one. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "bench.h"

/* Names of the sections in the files. */
static const char *const section_names[N_SECTIONS] = {"op", "model", "overhead"};
/* Most bars per cluster of the chart: devices and torch. */
#define MAX_SERIES 16

/* ---- files written whole or not at all ---- */

/* Creates a temporary file beside path (mode as a new file would get); *tmp receives its
 * name. NULL after a message. */
static FILE *open_temp(const char *path, char *tmp, size_t size) {
    if ((size_t)snprintf(tmp, size, "%s.XXXXXX", path) >= size) {
        fprintf(stderr, "ag bench: file name too long: %s\n", path);
        return NULL;
    }
    const int fd = mkstemp(tmp);
    if (fd < 0) {
        fprintf(stderr, "ag bench: cannot create %s: %s\n", tmp, strerror(errno));
        return NULL;
    }
    const mode_t mask = umask(0);
    umask(mask);
    FILE *f = fchmod(fd, 0666 & ~mask) == 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        fprintf(stderr, "ag bench: cannot write %s: %s\n", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
    }
    return f;
}

/* Renames the finished tmp to path; 0, or 1 after a message (tmp removed). */
static int commit(const char *tmp, const char *path, bool ok) {
    if (ok && rename(tmp, path) == 0) return 0;
    if (ok) fprintf(stderr, "ag bench: cannot write %s: %s\n", path, strerror(errno));
    unlink(tmp);
    return 1;
}

/* Closes f (written to tmp), then commits it as path. */
static int close_commit(FILE *f, const char *tmp, const char *path) {
    bool ok = !ferror(f);
    ok = fclose(f) == 0 && ok;
    if (!ok) fprintf(stderr, "ag bench: cannot write %s: %s\n", path, strerror(errno));
    return commit(tmp, path, ok);
}

/* ---- CSV ---- */

/* Writes a number field: empty for NaN. */
static void csv_number(FILE *f, double v) {
    if (isnan(v))
        fputs(",", f);
    else
        fprintf(f, ",%.6g", v);
}

int bench_write_csv(const char *path, const bench_results *r) {
    char tmp[4200];
    FILE *f = open_temp(path, tmp, sizeof tmp);
    if (!f) return 1;
    fputs("section,op,size,backend,pass,dtype,median_ms,min_ms,max_ms,repeats,throughput,unit,"
          "reference,ratio\n",
          f);
    for (int i = 0; i < r->count; i++) {
        const bench_record *e = &r->items[i];
        fprintf(f, "%s,%s,%s,%s,%s,%s", section_names[e->section], e->op, e->size, e->backend,
                e->pass, ag_dtype_name(e->dtype));
        csv_number(f, e->stats.median * 1e3);
        csv_number(f, e->stats.min * 1e3);
        csv_number(f, e->stats.max * 1e3);
        if (e->stats.repeats)
            fprintf(f, ",%d", e->stats.repeats);
        else
            fputs(",", f);
        csv_number(f, e->throughput);
        fprintf(f, ",%s,%s", e->unit, e->reference);
        csv_number(f, e->ratio);
        fputc('\n', f);
    }
    return close_commit(f, tmp, path);
}

/* ---- JSON ---- */

/* One record as a JSON object (times in ms); NULL when out of memory. */
static cJSON *json_record(const bench_record *e) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "section", section_names[e->section]);
    cJSON_AddStringToObject(o, "op", e->op);
    cJSON_AddStringToObject(o, "size", e->size);
    cJSON_AddStringToObject(o, "backend", e->backend);
    cJSON_AddStringToObject(o, "pass", e->pass);
    cJSON_AddStringToObject(o, "dtype", ag_dtype_name(e->dtype));
    cJSON_AddNumberToObject(o, "median_ms", e->stats.median * 1e3);
    cJSON_AddNumberToObject(o, "min_ms", e->stats.min * 1e3);
    cJSON_AddNumberToObject(o, "max_ms", e->stats.max * 1e3);
    cJSON_AddNumberToObject(o, "repeats", e->stats.repeats);
    cJSON_AddNumberToObject(o, "calls_per_repeat", e->stats.inner);
    cJSON_AddNumberToObject(o, "throughput", e->throughput);
    cJSON_AddStringToObject(o, "unit", e->unit);
    cJSON_AddStringToObject(o, "reference", e->reference);
    cJSON_AddNumberToObject(o, "reference_ms", e->reference_s * 1e3);
    /* cJSON has no NaN: a missing ratio is null. */
    cJSON_AddNumberToObject(o, "ratio", e->ratio);
    return o;
}

/* The whole report as a JSON tree. */
static cJSON *json_report(const bench_results *r, const bench_machine *m) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "ag_version", ag_version());
    cJSON_AddStringToObject(root, "date", m->date);
    cJSON *machine = cJSON_AddObjectToObject(root, "machine");
    cJSON_AddStringToObject(machine, "cpu_model", m->cpu_model);
    cJSON_AddNumberToObject(machine, "cores", m->cores);
    cJSON_AddNumberToObject(machine, "peak_rss_mib", m->peak_rss_mib);
    cJSON *devices = cJSON_AddArrayToObject(root, "devices");
    for (int i = 0; i < m->n_devices; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "device", m->devices[i]);
        cJSON_AddStringToObject(d, "name", m->device_names[i]);
        cJSON_AddItemToArray(devices, d);
    }
    if (m->torch && m->torch->ran) {
        cJSON *t = cJSON_AddObjectToObject(root, "torch");
        cJSON_AddStringToObject(t, "version", m->torch->version);
        cJSON_AddNumberToObject(t, "threads", m->torch->threads);
        cJSON_AddStringToObject(t, "device", m->torch->device);
    } else {
        cJSON_AddNullToObject(root, "torch");
    }
    cJSON *records = cJSON_AddArrayToObject(root, "records");
    for (int i = 0; i < r->count; i++) cJSON_AddItemToArray(records, json_record(&r->items[i]));
    return root;
}

int bench_write_json(const char *path, const bench_results *r, const bench_machine *m) {
    cJSON *root = json_report(r, m);
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "ag bench: out of memory writing %s\n", path);
        return 1;
    }
    char tmp[4200];
    FILE *f = open_temp(path, tmp, sizeof tmp);
    if (f) fprintf(f, "%s\n", text);
    free(text);
    return f ? close_commit(f, tmp, path) : 1;
}

/* ---- PNG chart ---- */

/* True if an executable `name` is in a directory of PATH. */
static bool on_path(const char *name) {
    const char *path = getenv("PATH");
    char dirs[8192], file[8300];
    snprintf(dirs, sizeof dirs, "%s", path ? path : "/usr/bin:/bin");
    for (char *save, *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(file, sizeof file, "%s/%s", dir, name);
        if (access(file, X_OK) == 0) return true;
    }
    return false;
}

/* Short text of a pass for the x axis. */
static const char *short_pass(const char *pass) {
    if (strcmp(pass, "forward") == 0) return "fwd";
    if (strcmp(pass, "forward+backward") == 0) return "fwd+bwd";
    if (strcmp(pass, "forward_grad") == 0) return "fwd (grad)";
    if (strcmp(pass, "step") == 0) return "";
    return pass;
}

/* One panel of the chart: a section's clusters (rows) by backends (columns). */
typedef struct panel {
    bench_section section;
    int first, end;                 /* its records: [first, end) of the sorted results */
    int n_series;                   /* backends */
    const char *series[MAX_SERIES]; /* their names, in key order */
    int series_key[MAX_SERIES];     /* their sort keys */
    int clusters;                   /* distinct (op, size, pass) */
    int label_chars;                /* longest x axis label */
    double low, high;               /* smallest and largest value (panel's unit) */
} panel;

/* True if records a and b are bars of one cluster. */
static bool same_cluster(const bench_record *a, const bench_record *b) {
    return a->section == b->section && memcmp(a->key, b->key, 3 * sizeof *a->key) == 0;
}

/* Finds the records, backends and clusters of section s in the sorted results. */
static void panel_scan(const bench_results *r, bench_section s, panel *p) {
    *p = (panel){.section = s, .first = r->count, .end = r->count};
    for (int i = 0; i < r->count; i++) {
        const bench_record *e = &r->items[i];
        if (e->section != s) continue;
        if (p->first == r->count) p->first = i;
        p->end = i + 1;
        if (i == p->first || !same_cluster(e, e - 1)) p->clusters++;
        const int chars = (int)(strlen(e->op) + strlen(e->size) + strlen(short_pass(e->pass)) + 2);
        if (chars > p->label_chars) p->label_chars = chars;
        const double v = e->stats.median * (s == SECTION_OVERHEAD ? 1e6 : 1e3);
        if (p->high == 0 || v < p->low) p->low = v;
        if (v > p->high) p->high = v;
        int k = 0;
        while (k < p->n_series && strcmp(p->series[k], e->backend) != 0) k++;
        if (k < p->n_series || k == MAX_SERIES) continue;
        /* Insert in key order, so the bars keep the table's backend order. */
        while (k > 0 && p->series_key[k - 1] > e->key[3]) {
            p->series[k] = p->series[k - 1];
            p->series_key[k] = p->series_key[k - 1];
            k--;
        }
        p->series[k] = e->backend;
        p->series_key[k] = e->key[3];
        p->n_series++;
    }
}

/* Writes a panel's data block $d<index>: one line per cluster, a label then one value per
 * backend ("?" where it has none) in the panel's unit. */
static void panel_data(FILE *g, const bench_results *r, const panel *p, int index) {
    const double scale = p->section == SECTION_OVERHEAD ? 1e6 : 1e3;
    fprintf(g, "$d%d << EOD\n", index);
    for (int i = p->first; i < p->end;) {
        const bench_record *c = &r->items[i];
        if (p->section == SECTION_OPS)
            fprintf(g, "\"%s %s %s\"", c->op, c->size, short_pass(c->pass));
        else if (p->section == SECTION_MODELS)
            fprintf(g, "\"%s\"", c->op);
        else
            fprintf(g, "\"%s\"", short_pass(c->pass));
        int j = i;
        while (j < p->end && same_cluster(&r->items[j], c)) j++;
        for (int k = 0; k < p->n_series; k++) {
            const bench_record *hit = NULL;
            for (int x = i; x < j; x++)
                if (strcmp(r->items[x].backend, p->series[k]) == 0) hit = &r->items[x];
            if (hit)
                fprintf(g, " %.6g", hit->stats.median * scale);
            else
                fputs(" ?", g);
        }
        fputc('\n', g);
        i = j;
    }
    fputs("EOD\n", g);
}

/* Writes the commands that draw panel `index` at (x, y) with size (w, h). */
static void panel_plot(FILE *g, const panel *p, int index, double x, double y, double w, double h) {
    static const char *const titles[N_SECTIONS] = {
        "op level: median time per call (ms, log scale)",
        "model level: median time per training step (ms, log scale)",
        "framework overhead: median time per tiny op (us, log scale)"};
    fprintf(g, "set origin %g,%g\nset size %g,%g\nset title \"%s\"\n", x, y, w, h,
            titles[p->section]);
    /* Room below for the labels, which gnuplot does not reserve itself in a multiplot. */
    fprintf(g, "set xtics %s\nset bmargin %.0f\n",
            p->section == SECTION_OPS ? "rotate by 90 right" : "norotate",
            p->section == SECTION_OPS ? 2 + p->label_chars * 0.5 : 3);
    /* Whole decades around the values: gnuplot would warn about a range of one value. */
    const double low = pow(10, floor(log10(p->low))), high = pow(10, ceil(log10(p->high)));
    fprintf(g, "set yrange [%g:%g]\nplot ", low, high > low ? high : low * 10);
    for (int k = 0; k < p->n_series; k++)
        fprintf(g, "%s$d%d using %d%s title \"%s\"", k ? ", " : "", index, k + 2,
                k ? "" : ":xtic(1)", p->series[k]);
    fputc('\n', g);
}

/* Writes the gnuplot script that draws every non-empty section into the file `out`. */
static void write_script(FILE *g, const bench_results *r, const char *out) {
    panel panels[N_SECTIONS];
    int n = 0, ops_clusters = 0, ops_series = 1;
    for (int s = 0; s < N_SECTIONS; s++) {
        panel_scan(r, (bench_section)s, &panels[n]);
        if (!panels[n].clusters) continue;
        if (s == SECTION_OPS) {
            ops_clusters = panels[n].clusters;
            ops_series = panels[n].n_series;
        }
        n++;
    }
    const bool top = ops_clusters > 0; /* the op-level panel spans the width on top */
    const int bottom = n - (top ? 1 : 0);
    double width = 120 + ops_clusters * (ops_series + 1) * 10.0;
    width = width < 1000 ? 1000 : width > 8000 ? 8000 : width;
    const int height = top && bottom ? 1100 : 700;
    fprintf(g,
            "if (strstrt(GPVAL_TERMINALS, \"pngcairo\") > 0) {\n"
            "  set terminal pngcairo size %.0f,%d font \",9\"\n"
            "} else {\n"
            "  set terminal png size %.0f,%d\n"
            "}\n",
            width, height, width, height);
    fputs("set termoption noenhanced\nset output '", g);
    for (const char *c = out; *c; c++) {
        if (*c == '\'') fputc('\'', g); /* '' is a quote inside a gnuplot '...' string */
        fputc(*c, g);
    }
    fputs("'\nset datafile missing \"?\"\nset style data histograms\n"
          "set style histogram clustered gap 1\nset style fill solid 0.85 border -1\n"
          "set logscale y\nset grid ytics\nset key outside right top vertical\n"
          "set xtics nomirror\nset ytics nomirror\n",
          g);
    for (int i = 0; i < n; i++) panel_data(g, r, &panels[i], i);
    fputs("set multiplot\n", g);
    const double top_h = bottom ? 0.6 : 1, bottom_h = top ? 0.4 : 1;
    for (int i = 0, b = 0; i < n; i++) {
        if (top && panels[i].section == SECTION_OPS)
            panel_plot(g, &panels[i], i, 0, bottom ? bottom_h : 0, 1, top_h);
        else
            panel_plot(g, &panels[i], i, (double)b++ / bottom, 0, 1.0 / bottom, bottom_h);
    }
    fputs("unset multiplot\n", g);
}

/* True if the file starts with the PNG signature. */
static bool is_png(const char *path) {
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char head[8] = {0};
    FILE *f = fopen(path, "rb");
    const bool ok = f && fread(head, 1, sizeof head, f) == sizeof head &&
                    memcmp(head, signature, sizeof head) == 0;
    if (f) fclose(f);
    return ok;
}

int bench_write_plot(const char *path, const bench_results *r) {
    if (!on_path("gnuplot")) {
        fprintf(stderr, "ag bench: --plot needs gnuplot, which is not installed (Debian: apt-get "
                        "install gnuplot-nox); the other reports were written\n");
        return 1;
    }
    char tmp[4200];
    FILE *f = open_temp(path, tmp, sizeof tmp);
    if (!f) return 1;
    fclose(f); /* gnuplot writes it */
    /* A gnuplot that dies early must not take ag with it. */
    void (*previous)(int) = signal(SIGPIPE, SIG_IGN);
    FILE *g = popen("gnuplot", "w");
    if (g) write_script(g, r, tmp);
    const int status = g ? pclose(g) : -1;
    signal(SIGPIPE, previous);
    const bool ok = status == 0 && is_png(tmp);
    if (!ok) fprintf(stderr, "ag bench: gnuplot failed to draw %s (status %d)\n", path, status);
    return commit(tmp, path, ok);
}
