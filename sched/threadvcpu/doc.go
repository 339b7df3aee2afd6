// Package threadvcpu provides thread vCPUs: plain host threads running
// synthetic guest work that implement [sched.VCPU] with the same
// mechanisms as the VMM's KVM vCPUs. A kick is a shared flag plus a
// real-time signal sent with tgkill (it interrupts a sleeping thread as it
// would interrupt KVM_RUN); a parked thread blocks in futex wait on its
// control word until unparked.
//
// "Guest mode" is a [Work]'s Run method: it returns as soon as
// [Guest.Exit] reports a pending kick, park or stop, like KVM_RUN returning
// EINTR, and is called again when the thread may run.
package threadvcpu
