"""The catalog: flags, policies, trust profiles, audits, appeals, rollouts and their history."""
