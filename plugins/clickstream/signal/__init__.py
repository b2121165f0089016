"""The training signal: debiased relevance labels from the clickstream, and the query key they share."""
