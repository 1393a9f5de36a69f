// placeholder
extern "C" __global__ void drafter_placeholder(int* x) { if (x) x[0] = 0; }
