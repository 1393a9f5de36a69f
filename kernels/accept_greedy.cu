// placeholder
extern "C" __global__ void accept_greedy_placeholder(int* x) { if (x) x[0] = 0; }
