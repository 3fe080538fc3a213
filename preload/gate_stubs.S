/* gate_stubs.S - the code a call through a gated GOT slot runs (preload/gates.h).
 *
 * Stub i (16 bytes each, mpk_gate_stubs + 16 * i) puts i in r11 and jumps to mpk_gate_common,
 * which, with the caller's arguments untouched (rdi..r9, xmm0-7, al for varargs, stack arguments
 * where they were):
 *   1. saves the argument registers (the general ones: see below for the vector ones) and calls
 *      mpk_gate_enter(i, return address, caller's rsp),
 *      which pushes a frame on the thread's gate stack, opens the region's keys in the thread's
 *      PKRU and returns the real function and the frame;
 *   2. drops the caller's return address from the stack (it is in the frame) and calls the real
 *      function, so that its stack arguments are exactly where the caller put them;
 *   3. on return, saves the return registers (rax, rdx), calls mpk_gate_exit(frame),
 *      which closes the keys and pops the frame, and jumps to the caller's return address.
 * During the call rbx holds the frame (rbx is callee-saved: the real function gives it back, and
 * an unwinder restores it), and the caller's rbx is kept in the frame. The unwind information
 * says so: return address at [rbx], caller's rbx at [rbx + 8]. An exception that leaves the real
 * function lands in .Lgate_landing (a cleanup, __gcc_personality_v0), which closes the gate and
 * resumes unwinding as if the caller had called _Unwind_Resume itself. r10 and r11 are the only
 * registers the stub uses that the caller may not expect changed, as in any PLT stub.
 */

/* The vector argument and result registers (xmm0-7 in, xmm0-1 out) are saved around
 * mpk_gate_enter and mpk_gate_exit only where gate_runtime.cc may touch them: it is built to use
 * general registers only (-mgeneral-regs-only), and the out-of-line calls it makes on rare paths
 * go through mpk_call_keeping_vectors. A sanitized build instruments that code with calls into
 * its runtime, so there (MPK_GATE_SAVE_VECTORS) the stubs save them. */
#ifdef MPK_GATE_SAVE_VECTORS
#define EXIT_RBX_SLOT 48
#else
#define EXIT_RBX_SLOT 16
#endif

/* xmm0-7 to or from 8 slots of 16 bytes at OFF(%rsp) (16-byte aligned). */
	.macro save_vectors off
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7
	movaps	%xmm\n, \off + 16 * \n(%rsp)
	.endr
	.endm
	.macro restore_vectors off
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7
	movaps	\off + 16 * \n(%rsp), %xmm\n
	.endr
	.endm

	.text
	.p2align 4
	.globl	mpk_gate_stubs
	.hidden	mpk_gate_stubs
	.type	mpk_gate_stubs, @function
mpk_gate_stubs:
	.set	stub, 0
	.rept	4096
	.p2align 4
	movl	$stub, %r11d
	jmp	mpk_gate_common
	.set	stub, stub + 1
	.endr
	.size	mpk_gate_stubs, . - mpk_gate_stubs
	.globl	mpk_gate_stubs_end
	.hidden	mpk_gate_stubs_end
mpk_gate_stubs_end:

	.p2align 4
	.type	mpk_gate_common, @function
mpk_gate_common:
	.cfi_startproc
	.cfi_personality 0x9b, DW.ref.__gcc_personality_v0
	.cfi_lsda 0x1b, .Lgate_lsda
	/* Entered by a jump from a stub: the caller's return address at (%rsp), rsp = 8 mod 16. */
#ifdef MPK_GATE_SAVE_VECTORS
	subq	$200, %rsp
	.cfi_adjust_cfa_offset 200
#else
	subq	$56, %rsp
	.cfi_adjust_cfa_offset 56
#endif
	movq	%rdi, 0(%rsp)
	movq	%rsi, 8(%rsp)
	movq	%rdx, 16(%rsp)
	movq	%rcx, 24(%rsp)
	movq	%r8, 32(%rsp)
	movq	%r9, 40(%rsp)
	movq	%rax, 48(%rsp)
#ifdef MPK_GATE_SAVE_VECTORS
	save_vectors 64
	movl	%r11d, %edi
	movq	200(%rsp), %rsi
	leaq	208(%rsp), %rdx
#else
	movl	%r11d, %edi
	movq	56(%rsp), %rsi
	leaq	64(%rsp), %rdx
#endif
	call	mpk_gate_enter
	movq	%rax, %r11
	movq	%rdx, %r10
	movq	0(%rsp), %rdi
	movq	8(%rsp), %rsi
	movq	16(%rsp), %rdx
	movq	24(%rsp), %rcx
	movq	32(%rsp), %r8
	movq	40(%rsp), %r9
	movq	48(%rsp), %rax
#ifdef MPK_GATE_SAVE_VECTORS
	restore_vectors 64
	addq	$200, %rsp
	.cfi_adjust_cfa_offset -200
#else
	addq	$56, %rsp
	.cfi_adjust_cfa_offset -56
#endif
	movq	%rbx, 8(%r10)
	movq	%r10, %rbx
	addq	$8, %rsp
	/* From here the caller's return address and rbx are in the frame rbx points at. */
	.cfi_def_cfa_offset 0
	.cfi_escape 0x10, 0x10, 0x02, 0x73, 0x00	/* DW_CFA_expression: return address at [rbx] */
	.cfi_escape 0x10, 0x03, 0x02, 0x73, 0x08	/* DW_CFA_expression: rbx at [rbx + 8] */
.Lgate_call:
	call	*%r11
.Lgate_called:
#ifdef MPK_GATE_SAVE_VECTORS
	subq	$64, %rsp
	.cfi_adjust_cfa_offset 64
	movaps	%xmm0, 16(%rsp)
	movaps	%xmm1, 32(%rsp)
#else
	subq	$32, %rsp
	.cfi_adjust_cfa_offset 32
#endif
	movq	%rax, 0(%rsp)
	movq	%rdx, 8(%rsp)
	movq	8(%rbx), %rax
	movq	%rax, EXIT_RBX_SLOT(%rsp)
	movq	%rbx, %rdi
	call	mpk_gate_exit
	movq	%rax, %r11
	movq	EXIT_RBX_SLOT(%rsp), %rbx
	movq	0(%rsp), %rax
	movq	8(%rsp), %rdx
#ifdef MPK_GATE_SAVE_VECTORS
	movaps	16(%rsp), %xmm0
	movaps	32(%rsp), %xmm1
	addq	$64, %rsp
	.cfi_adjust_cfa_offset -64
#else
	addq	$32, %rsp
	.cfi_adjust_cfa_offset -32
#endif
	jmp	*%r11
.Lgate_landing:
	/* An exception left the real function: rax = the exception, rbx = the frame, rsp = CFA. */
	subq	$16, %rsp
	.cfi_adjust_cfa_offset 16
	movq	%rax, 0(%rsp)
	movq	8(%rbx), %rax
	movq	%rax, 8(%rsp)
	movq	%rbx, %rdi
	call	mpk_gate_exit
	movq	8(%rsp), %rbx
	movq	%rax, 8(%rsp)
	movq	0(%rsp), %rdi
	addq	$8, %rsp
	/* rsp = the caller's rsp at its call, its return address on top, its rbx back: continue
	 * unwinding from the caller, as if the gated call had been a call of _Unwind_Resume. */
	jmp	_Unwind_Resume@PLT
	.cfi_endproc
	.size	mpk_gate_common, . - mpk_gate_common

/* mpk_call_keeping_vectors(fn): calls fn() with xmm0-7 kept (gate_runtime.cc's rare calls into
 * code built with vector registers: the gated call's arguments or results are in them). */
	.p2align 4
	.globl	mpk_call_keeping_vectors
	.hidden	mpk_call_keeping_vectors
	.type	mpk_call_keeping_vectors, @function
mpk_call_keeping_vectors:
	.cfi_startproc
	subq	$136, %rsp
	.cfi_adjust_cfa_offset 136
	save_vectors 0
	call	*%rdi
	restore_vectors 0
	addq	$136, %rsp
	.cfi_adjust_cfa_offset -136
	ret
	.cfi_endproc
	.size	mpk_call_keeping_vectors, . - mpk_call_keeping_vectors

	.section .gcc_except_table,"a",@progbits
	.p2align 2
.Lgate_lsda:
	.byte	0xff		/* @LPStart: the function's start */
	.byte	0xff		/* no type table: cleanups only */
	.byte	0x01		/* call-site entries in uleb128 */
	.uleb128 .Lgate_cs_end - .Lgate_cs_begin
.Lgate_cs_begin:
	.uleb128 .Lgate_call - mpk_gate_common
	.uleb128 .Lgate_called - .Lgate_call
	.uleb128 .Lgate_landing - mpk_gate_common
	.uleb128 0		/* action: cleanup */
.Lgate_cs_end:

	.hidden	DW.ref.__gcc_personality_v0
	.weak	DW.ref.__gcc_personality_v0
	.section .data.rel.local.DW.ref.__gcc_personality_v0,"awG",@progbits,DW.ref.__gcc_personality_v0,comdat
	.align 8
	.type	DW.ref.__gcc_personality_v0, @object
	.size	DW.ref.__gcc_personality_v0, 8
DW.ref.__gcc_personality_v0:
	.quad	__gcc_personality_v0

	.section .note.GNU-stack,"",@progbits
