#include "launcher.h"
#include "image_format.h"
enum cx_outcome cx_restore(struct launch *L) { (void)L; return CX_MISS; }
int cx_inspect(const char *image) { (void)image; return 1; }
