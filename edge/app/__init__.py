"""The appliance: configuration, the assembly of a run, the loop, the service and its outputs."""
