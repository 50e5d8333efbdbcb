// Rendered by edgeq export micro for model '{{cname}}': a minimal Cortex-M4 start for boards with
// code at 0x00000000 and RAM at 0x20000000 (QEMU's mps2-an386; adapt mps2_an386.ld to your part).
// Vector table, .bss cleared, C++ constructors, semihosting stdout (newlib's rdimon), and SysTick
// counting processor clock cycles for edgeq_ticks().
#include <stdint.h>

extern uint32_t __stack_top, __bss_start__, __bss_end__;
extern int main(void);
extern void __libc_init_array(void);
extern void initialise_monitor_handles(void);
extern void exit(int status) __attribute__((noreturn));

#define SYST_CSR (*(volatile uint32_t*)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018u)
#define SYST_MAX 0x00FFFFFFu

static volatile uint32_t g_systick_wraps;

void Reset_Handler(void) {
  for (uint32_t* p = &__bss_start__; p < &__bss_end__; ++p) *p = 0;
  initialise_monitor_handles();
  SYST_RVR = SYST_MAX;
  SYST_CVR = 0;
  SYST_CSR = 7;  // processor clock, interrupt on wrap, enabled
  while (SYST_CVR == 0) {
  }  // the first clock reloads the counter; before it, a read would look like a wrap
  __libc_init_array();
  exit(main());
}

// -nostartfiles leaves out crti/crtn and crtbegin: newlib's __libc_init_array still calls
// _init/_fini, and C++ statics with destructors register against __dso_handle
void _init(void) {}
void _fini(void) {}
void* __dso_handle = &__dso_handle;

void SysTick_Handler(void) { g_systick_wraps = g_systick_wraps + 1; }

void Default_Handler(void) {
  for (;;) {
  }
}

// Processor clock cycles since reset (SysTick, extended past its 24 bits by the wrap count).
unsigned long edgeq_ticks(void) {
  uint32_t wraps, value;
  do {
    wraps = g_systick_wraps;
    value = SYST_CVR;
  } while (wraps != g_systick_wraps);
  return (unsigned long)wraps * (SYST_MAX + 1u) + (SYST_MAX - value);
}

typedef void (*Handler)(void);
__attribute__((section(".vectors"), used)) const Handler g_vectors[16] = {
    (Handler)&__stack_top, Reset_Handler,   Default_Handler, Default_Handler,
    Default_Handler,       Default_Handler, Default_Handler, 0,
    0,                     0,               0,               Default_Handler,
    Default_Handler,       0,               Default_Handler, SysTick_Handler,
};
