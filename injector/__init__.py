"""pilotfish's injector: the admission webhook that adds the sidecar, and offline inject."""
