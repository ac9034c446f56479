#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <jemalloc/jemalloc.h>

/// The file that defines the `malloc` every library of the process calls (the dynamic linker's
/// default lookup), or NULL when it cannot be told.
static inline const char *cjemalloc_malloc_file(void) {
    void *symbol = dlsym(RTLD_DEFAULT, "malloc");
    Dl_info info;
    if (symbol == NULL || dladdr(symbol, &info) == 0) return NULL;
    return info.dli_fname;
}
