"""Task modules of the peer systems; each task only calls bench/handlers.py."""
