"""Reports: the plots and tables a scientist expects from a workflow."""
