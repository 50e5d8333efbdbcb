// Rendered by edgeq export micro for model '{{cname}}': load, allocate, run the golden check.
#include "edgeq_app.h"

int main() { return {{cname}}_model::RunSelfTest(); }
