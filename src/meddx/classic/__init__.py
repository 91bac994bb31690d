"""meddx.classic"""
