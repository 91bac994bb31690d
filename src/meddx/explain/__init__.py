"""meddx.explain"""
