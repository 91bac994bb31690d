"""meddx.transforms"""
