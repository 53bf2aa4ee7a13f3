"""Use cases: gather state, ask core for the decision, apply it with its audit record in one
transaction. Services take plain values and return plain values or ``protocol`` models; they
never see HTTP requests."""
