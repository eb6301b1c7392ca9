"""A local virtual datacenter: real peers (emulated BMCs) to try and test Metalform on."""
