//! An in-memory cloud of hosts whose VMs migrate in simulated time, for unit
//! tests of the orchestration logic (the evacuation runner, the API). It is
//! not a stand-in for the integration tests: those run real libvirt.
