// placeholder
extern "C" __global__ void accept_sample_placeholder(int* x) { if (x) x[0] = 0; }
