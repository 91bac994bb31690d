"""meddx.models"""
