//! The two libvirt calls that `virt` 0.5 does not wrap and that solive
//! cannot do as well another way, made directly on `virt-sys`. This is the
//! only module of the crate allowed `unsafe`; each call is one C function on
//! a domain handle that `virt` owns, with libvirt's usual `-1` for failure.
//!
//! - `virDomainAbortJob`: the monitor's `migrate_cancel` only stops a
//!   migration QEMU already runs. While libvirt still prepares the
//!   destination there is none, and a cancel sent then was lost (the VM
//!   migrated anyway). libvirt's own abort also marks its job aborted, and
//!   its migration code checks that mark before it starts QEMU's migration
//!   ("canceled by client"), so a cancel is never lost in that window.
//! - `virDomainMigrateStartPostCopy`: the switch through libvirt's job
//!   rather than around it, so libvirt knows the migration is in post-copy
//!   (it then refuses an abort that would lose the VM).
#![allow(unsafe_code)]

use virt::domain::Domain;
use virt::error::Error;
use virt::sys;

/// `virDomainAbortJob`: aborts the domain's current job (here: the outgoing
/// migration), including one that has not reached QEMU yet.
pub fn abort_job(dom: &Domain) -> Result<(), Error> {
    // SAFETY: `dom` is a live handle owned by `virt` for the whole call (the
    // borrow keeps it from being freed); the function only reads it.
    let ret = unsafe { sys::virDomainAbortJob(dom.as_ptr()) };
    if ret == -1 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// `virDomainMigrateStartPostCopy` (flags must be 0).
pub fn start_post_copy(dom: &Domain) -> Result<(), Error> {
    // SAFETY: as in `abort_job`.
    let ret = unsafe { sys::virDomainMigrateStartPostCopy(dom.as_ptr(), 0) };
    if ret == -1 {
        return Err(Error::last_error());
    }
    Ok(())
}
