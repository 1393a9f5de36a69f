// placeholder
extern "C" __global__ void tree_placeholder(int* x) { if (x) x[0] = 0; }
